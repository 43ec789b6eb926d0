import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { HangarApiError, type HangarClient, type NextAction } from '../sdk/index.ts';
import { appTools } from './app-tools.ts';
import { fileTools } from './file-tools.ts';
import { checkpointTools } from './checkpoint-tools.ts';
import { machineTools } from './machine-tools.ts';
import { processTools } from './process-tools.ts';
import { volumeTools } from './volume-tools.ts';
import { observeTools } from './observe-tools.ts';
import { registerResources } from './resources.ts';
import { registerFileResources } from './file-resources.ts';
import { sessionTools } from './session-tools.ts';
import { tokenTools } from './token-tools.ts';
import { secretTools } from './secret-tools.ts';
import { withHeartbeat } from './progress.ts';
import { describe, type ToolContext, type ToolDef, type ToolOutput } from './tool-def.ts';
import type { DaemonAddresses } from '../protocol/daemon-addresses.ts';

// The MCP server: every tool is a call through a HangarClient, so stdio (`hangar mcp`) and
// Streamable HTTP (/mcp) behave alike and the REST API's auth applies to both.

const TOOLS: ToolDef[] = [...appTools, ...machineTools, ...checkpointTools, ...volumeTools, ...processTools, ...sessionTools, ...fileTools, ...observeTools, ...tokenTools, ...secretTools];

/** Names and descriptions, for /llms.txt. */
export function toolSummaries(addresses: DaemonAddresses): Array<{ name: string; description: string }> {
  return TOOLS.map((t) => ({ name: t.name, description: describe(t, addresses) }));
}

const SERVER_INFO = { name: 'hangar', version: '0.1.0' };

const INSTRUCTIONS =
  'Hangar runs machines (containers from OCI images) for you. Create an app (app_create), then a machine in it (machine_create), ' +
  'build it up in place with machine_exec and file_write, stop it when idle (files are kept) and start it again in milliseconds. ' +
  'Errors come as "<code>: <message>" with a hint line saying what to do next.';

/** `addresses`: where the daemon serves, for text that names them; undefined when it could not be asked. */
export function createMcpServer(client: HangarClient, addresses: DaemonAddresses | undefined): McpServer {
  const server = new McpServer(SERVER_INFO, { instructions: INSTRUCTIONS });
  for (const def of TOOLS) {
    server.registerTool(
      def.name,
      { description: describe(def, addresses), inputSchema: z.object(def.input), annotations: def.annotations },
      async (args, extra) => {
        const token = extra._meta?.progressToken;
        let progress = 0;
        const ctx: ToolContext = {
          client,
          signal: extra.signal,
          progress: async (message) => {
            if (token === undefined) return;
            await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: ++progress, message } });
          },
        };
        try {
          return success(await withHeartbeat(def.name, ctx, () => def.run(args as never, ctx)));
        } catch (err) {
          return failure(err);
        }
      },
    );
  }
  registerResources(server, client);
  registerFileResources(server, client);
  return server;
}

function success(out: ToolOutput): CallToolResult {
  // Hosts that ignore structuredContent still get the data, as the MCP spec asks of servers.
  return {
    content: [{ type: 'text', text: out.summary }, { type: 'text', text: out.text ?? JSON.stringify(out.data) }],
    structuredContent: out.data,
    ...(out.failed ? { isError: true } : {}),
  };
}

/** A failed call is a tool result robots can act on (`code`, `hint`), never a protocol error. */
function failure(err: unknown): CallToolResult {
  const e =
    err instanceof HangarApiError
      ? { code: err.code, error: err.message, hint: toolHint(err) }
      : (err as Error)?.name === 'AbortError' || (err as Error)?.name === 'TimeoutError'
        ? { code: 'cancelled', error: 'the call was cancelled', hint: undefined }
        : { code: 'internal', error: (err as Error)?.message ?? String(err), hint: 'retry; if it persists, check the daemon log' };
  return {
    isError: true,
    content: [{ type: 'text', text: `${e.code}: ${e.error}${e.hint ? `\nhint: ${e.hint}` : ''}` }],
    structuredContent: { code: e.code, error: e.error, ...(e.hint ? { hint: e.hint } : {}) },
  };
}

/** The API's next actions as tool calls, so a model is never told to POST to a route it cannot reach. */
function toolHint(err: HangarApiError): string | undefined {
  if (err.next.length === 0) return err.hint;
  const call = (n: NextAction) => `${n.action} ${JSON.stringify({ app: n.app, ...(n.id === undefined ? {} : { id: n.id }), ...(n.force ? { force: true } : {}) })}`;
  const elsewhere = err.code === 'machine_not_found' ? (err.details?.machine_app as string | undefined) : undefined;
  if (elsewhere) return `it is in app ${elsewhere}: call again with app "${elsewhere}" (${call(err.next[0]!)} shows it)`;
  return `call ${err.next.map(call).join(', or ')}`;
}
