import { connect } from './connect.ts';
import { parseFlags } from './args.ts';

export const mcpUsage = `hangar mcp [--data-dir DIR]
  Serves Hangar's MCP tools over stdio, for an MCP host to run. It calls the daemon's API, found
  as the other commands find it. stdout carries the protocol; diagnostics go to stderr.`;

export async function mcp(argv: string[]): Promise<number> {
  const { values } = parseFlags('mcp', { args: argv, options: { 'data-dir': { type: 'string' } } });
  const client = connect(values['data-dir']);
  // Tool descriptions name the daemon's addresses; without a daemon yet, they say where to look.
  const addresses = await client.addresses({ timeoutMs: 5000 }).catch(() => undefined);
  // Loaded here, not with the CLI, which every other command would pay for.
  const [{ createMcpServer }, { StdioServerTransport }] = await Promise.all([import('../mcp/mcp-server.ts'), import('@modelcontextprotocol/sdk/server/stdio.js')]);
  const server = createMcpServer(client, addresses);
  const transport = new StdioServerTransport();
  // The host ends the session by closing our stdin; the transport itself does not watch for that.
  const ended = new Promise<void>((resolve) => {
    process.stdin.once('end', resolve);
    transport.onclose = resolve;
  });
  await server.connect(transport);
  await ended;
  await server.close();
  return 0;
}
