import { posix } from 'node:path';
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { McpError, SubscribeRequestSchema, UnsubscribeRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { HangarApiError, MachineFiles, type FileWatch, type HangarClient } from '../sdk/index.ts';

// A machine's files as MCP resources (`hangar://apps/APP/machines/ID/files/PATH`): a host reads
// one into the model's context, and subscribes to hear when it changes (resources/updated, from
// the daemon's file watch), so a robot waiting on a build output or a log file need not poll.

const MAX_READ_BYTES = 256 * 1024;
const MAX_SUBSCRIPTIONS = 16;
// JSON-RPC codes the MCP spec uses: resource not found, invalid params.
const RESOURCE_NOT_FOUND = -32002;
const INVALID_PARAMS = -32602;
const URI = /^hangar:\/\/apps\/([^/]+)\/machines\/([^/]+)\/files(\/.*)$/;

type Target = { app: string; id: string; path: string };

function parse(uri: string): Target {
  const m = URI.exec(uri);
  if (!m) throw new McpError(INVALID_PARAMS, `${uri} is not a machine file (hangar://apps/APP/machines/ID/files/PATH)`);
  return { app: decodeURIComponent(m[1]!), id: decodeURIComponent(m[2]!), path: posix.normalize(decodeURIComponent(m[3]!)) };
}

function asMcpError(err: unknown, uri: string): unknown {
  if (!(err instanceof HangarApiError)) return err;
  const code = err.code.endsWith('_not_found') ? RESOURCE_NOT_FOUND : -32603;
  return new McpError(code, `${err.code}: ${err.message}${err.hint ? `\nhint: ${err.hint}` : ''}`, { uri });
}

/** Must run before the server connects: it declares the subscribe capability. */
export function registerFileResources(server: McpServer, client: HangarClient): void {
  const template = new ResourceTemplate('hangar://apps/{app}/machines/{id}/files{+path}', { list: undefined });
  server.registerResource(
    'machine-file',
    template,
    { description: `A file in a machine (the first ${MAX_READ_BYTES / 1024} KiB); subscribe to hear when it changes (the machine must be started)` },
    async (uri) => {
      const { app, id, path } = parse(uri.href);
      try {
        const bytes = await new MachineFiles(client, app, id).read(path, { range: { start: 0, end: MAX_READ_BYTES - 1 } });
        const text = new TextDecoder('utf-8', { fatal: true });
        try {
          return { contents: [{ uri: uri.href, mimeType: 'text/plain', text: text.decode(bytes) }] };
        } catch {
          return { contents: [{ uri: uri.href, mimeType: 'application/octet-stream', blob: Buffer.from(bytes).toString('base64') }] };
        }
      } catch (err) {
        throw asMcpError(err, uri.href);
      }
    },
  );

  const watches = new Map<string, FileWatch>();
  server.server.registerCapabilities({ resources: { subscribe: true } });
  server.server.setRequestHandler(SubscribeRequestSchema, async (req) => {
    const uri = req.params.uri;
    if (watches.has(uri)) return {};
    if (watches.size >= MAX_SUBSCRIPTIONS) {
      throw new McpError(INVALID_PARAMS, `at most ${MAX_SUBSCRIPTIONS} subscriptions per session; unsubscribe from one first`);
    }
    const { app, id, path } = parse(uri);
    // The directory holding it: a file that does not exist yet can be waited for too.
    const watch = await client.machines.watchFiles(app, id, posix.dirname(path), { recursive: false }).catch((err: unknown) => {
      throw asMcpError(err, uri);
    });
    watches.set(uri, watch);
    void (async () => {
      for await (const change of watch) {
        const touched = 'path' in change ? [change.path, ...('from' in change && typeof change.from === 'string' ? [change.from] : [])] : [];
        if (change.type === 'overflow' || touched.includes(path)) await server.server.sendResourceUpdated({ uri }).catch(() => undefined);
      }
      watches.delete(uri);
    })().catch(() => watches.delete(uri));
    return {};
  });
  server.server.setRequestHandler(UnsubscribeRequestSchema, async (req) => {
    watches.get(req.params.uri)?.close();
    watches.delete(req.params.uri);
    return {};
  });
  const closed = server.server.onclose;
  server.server.onclose = () => {
    for (const w of watches.values()) w.close();
    watches.clear();
    closed?.();
  };
}
