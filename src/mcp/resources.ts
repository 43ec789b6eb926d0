import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import type { Resource } from '@modelcontextprotocol/sdk/types.js';
import { HangarApiError, type HangarClient } from '../sdk/index.ts';

// Read-only views of machines as MCP resources: a host can attach a machine's config, its
// recent logs or its egress log to the model's context without a tool call.

const LOG_LINES = 200;
// JSON-RPC code the MCP spec gives to "resource not found".
const RESOURCE_NOT_FOUND = -32002;

type Kind = { name: string; path: string; mimeType: string; title: string };
const KINDS: Kind[] = [
  { name: 'machine-config', path: 'config', mimeType: 'application/json', title: 'config (JSON)' },
  { name: 'machine-logs', path: 'logs', mimeType: 'text/plain', title: `last ${LOG_LINES} log lines` },
  { name: 'machine-egress', path: 'egress', mimeType: 'application/x-ndjson', title: `last ${LOG_LINES} egress events (names looked up, connections, refusals)` },
];

/** Every existing machine's resources of one kind, across all apps. */
async function listAll(client: HangarClient, kind: Kind, signal: AbortSignal): Promise<Resource[]> {
  const { apps } = await client.apps.list({ signal });
  const perApp = await Promise.all(
    apps.map(async (a) => (await client.machines.list(a.name, { signal })).map((m) => ({ app: a.name, m }))),
  );
  return perApp.flat().map(({ app, m }) => ({
    uri: `hangar://apps/${encodeURIComponent(app)}/machines/${m.id}/${kind.path}`,
    name: `${app}/${m.name || m.id} ${kind.path}`,
    title: `${m.id} ${kind.title}`,
    mimeType: kind.mimeType,
  }));
}

function one(value: string | string[]): string {
  return decodeURIComponent(Array.isArray(value) ? value[0]! : value);
}

export function registerResources(server: McpServer, client: HangarClient): void {
  for (const kind of KINDS) {
    const template = new ResourceTemplate(`hangar://apps/{app}/machines/{id}/${kind.path}`, {
      list: async (extra) => ({ resources: await listAll(client, kind, extra.signal) }),
    });
    server.registerResource(kind.name, template, { mimeType: kind.mimeType, description: `A machine's ${kind.title}` }, async (uri, vars, extra) => {
      const [app, id] = [one(vars.app!), one(vars.id!)];
      try {
        const text =
          kind.path === 'config'
            ? JSON.stringify((await client.machines.get(app, id, { signal: extra.signal })).config, null, 2)
            : kind.path === 'egress'
              ? (await client.machines.egress(app, id, { tail: LOG_LINES, signal: extra.signal })).events.map((e) => JSON.stringify(e)).join('\n')
              : (await client.machines.logs(app, id, { tail: LOG_LINES, signal: extra.signal })).lines.join('\n');
        return { contents: [{ uri: uri.href, mimeType: kind.mimeType, text }] };
      } catch (err) {
        if (!(err instanceof HangarApiError)) throw err;
        const code = err.code.endsWith('_not_found') ? RESOURCE_NOT_FOUND : -32603;
        throw new McpError(code, `${err.code}: ${err.message}${err.hint ? `\nhint: ${err.hint}` : ''}`, { uri: uri.href });
      }
    });
  }
}
