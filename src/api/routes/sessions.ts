import { once } from 'node:events';
import { z } from 'zod';
import type { WebSocket } from 'ws';
import { HangarError } from '../../protocol/errors.ts';
import {
  KillSessionRequestSchema, SessionInputRequestSchema, SessionOutputEventSchema, SessionOutputQuerySchema, SessionParams, SessionSchema,
  StartSessionRequestSchema,
} from '../../protocol/sessions.ts';
import { wakeForExec } from '../../machines/exec-wake.ts';
import { HANDLED, route } from '../route.ts';
import { MachineParams, OkSchema } from './params.ts';
import type { ApiServices } from '../services.ts';

// Sessions: commands that outlive the connection (machines/session-service.ts). Output is read
// by byte offset as NDJSON, followed as it is written, or attached to over a WebSocket that also
// carries stdin, terminal resizes and kill.

const AttachQuerySchema = SessionOutputQuerySchema.omit({ follow: true, max_bytes: true });

const AttachMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('stdin'), data: z.string(), encoding: z.enum(['utf8', 'base64']).default('utf8') }),
  z.object({ type: z.literal('resize'), rows: z.int().min(1).max(1000), cols: z.int().min(1).max(1000) }),
  z.object({ type: z.literal('kill'), signal: KillSessionRequestSchema.shape.signal }),
]);

const HIGH_WATER_BYTES = 1024 * 1024;

/** What a session runs, for a token limited to commands: writing to it is running it. */
const sessionCommand = async ({ params, services }: { params: { app_name: string; machine_id: string; session_id: string }; services: ApiServices }) =>
  (await services.sessions.get(params.app_name, params.machine_id, params.session_id)).command;

function errorMessage(err: unknown): string {
  const e = err instanceof HangarError ? err : new HangarError('validation_failed', `bad message: ${(err as Error).message}`, {
    hint: 'messages are {"type":"stdin","data"}, {"type":"resize","rows","cols"} or {"type":"kill","signal"?}',
  });
  return JSON.stringify({ type: 'error', code: e.code, error: e.message, hint: e.hint });
}

async function drained(socket: WebSocket): Promise<void> {
  while (socket.bufferedAmount > HIGH_WATER_BYTES && socket.readyState === socket.OPEN) await new Promise((r) => setTimeout(r, 20));
}

export const sessionRoutes = [
  route({
    access: { action: 'exec', command: ({ body }: { body: { command: string[] } }) => body.command },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/sessions', tag: 'Sessions', status: 201,
    summary:
      'Start a session: a command in the started machine that keeps running when the client hangs up or the daemon restarts, ' +
      'until it exits, is killed, or the machine stops. Its output (stdout and stderr together) is kept, the last 6–8 MiB of it, ' +
      'and read by byte offset from …/output; tty: true gives it a terminal to attach to (…/attach). A stopped machine is started first ' +
      '(header x-hangar-machine-started: true) unless autostart is off; a running session keeps the machine from being stopped as idle',
    params: MachineParams, body: StartSessionRequestSchema, response: SessionSchema,
    handler: async ({ services, params, body, reply, caller }) => {
      if (await wakeForExec(services.machines, params.app_name, params.machine_id, caller)) void reply.header('x-hangar-machine-started', 'true');
      return services.sessions.start(params.app_name, params.machine_id, body);
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/sessions', tag: 'Sessions',
    summary: "The machine's sessions, running and recently ended (with exit codes), newest first",
    params: MachineParams, response: z.array(SessionSchema),
    handler: ({ services, params }) => services.sessions.list(params.app_name, params.machine_id),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/sessions/{session_id}', tag: 'Sessions',
    summary: 'One session (by id or name)', params: SessionParams, response: SessionSchema,
    handler: ({ services, params }) => services.sessions.get(params.app_name, params.machine_id, params.session_id),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/sessions/{session_id}/output', tag: 'Sessions',
    summary:
      'Output as NDJSON: {"type":"output","offset","size","data"} pieces from `offset` (default: the oldest byte kept; tail_bytes: that many ' +
      'before the end), a {"type":"gap","from","to"} first when the offset is older than the scrollback, and last {"type":"end","offset","session"} ' +
      'whose offset is where to read from next. With follow=true the stream stays open for new output and ends when the session does',
    params: SessionParams, query: SessionOutputQuerySchema, response: SessionOutputEventSchema, produces: 'application/x-ndjson',
    handler: async ({ services, params, query, reply, signal }) => {
      const events = await services.sessions.output(params.app_name, params.machine_id, params.session_id, {
        ...(query.offset !== undefined ? { offset: query.offset } : {}),
        ...(query.tail_bytes !== undefined ? { tailBytes: query.tail_bytes } : {}),
        ...(query.max_bytes !== undefined ? { maxBytes: query.max_bytes } : {}),
        follow: query.follow, encoding: query.encoding,
      }, signal);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache', 'x-request-id': reply.request.id });
      try {
        for await (const event of events) {
          // A reader slower than the command writes holds the output back, not the daemon's memory.
          if (!res.write(JSON.stringify(event) + '\n')) await once(res, 'drain', { signal }).catch(() => undefined);
        }
      } finally {
        res.end();
      }
      return HANDLED;
    },
  }),
  route({
    access: { action: 'exec', command: sessionCommand },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/sessions/{session_id}/attach', tag: 'Sessions',
    summary:
      'WebSocket: the output from `offset` (default all that is kept; tail_bytes: that many before the end) as the events of …/output, then live, ' +
      'ending with {"type":"end"} when the session ends. Send {"type":"stdin","data"}, {"type":"resize","rows","cols"} (tty) or ' +
      '{"type":"kill","signal"?}. Closing the socket leaves the session running',
    params: SessionParams, query: AttachQuerySchema, response: SessionOutputEventSchema,
    handler: () => {
      throw new HangarError('bad_request', 'this endpoint speaks WebSocket', {
        hint: 'connect with a WebSocket client (Upgrade: websocket); or read GET …/output?follow=true',
      });
    },
    websocket: async (socket, { services, params, query, signal }) => {
      const { app_name: app, machine_id: machine, session_id: session } = params;
      // Attached at once: messages sent right after connecting arrive before any await here ends.
      socket.on('message', (raw) => {
        void (async () => {
          const msg = AttachMessageSchema.parse(JSON.parse(String(raw)));
          if (msg.type === 'stdin') await services.sessions.write(app, machine, session, Buffer.from(msg.data, msg.encoding));
          else if (msg.type === 'resize') await services.sessions.resize(app, machine, session, msg.rows, msg.cols);
          else await services.sessions.kill(app, machine, session, msg.signal);
        })().catch((err: unknown) => {
          if (socket.readyState === socket.OPEN) socket.send(errorMessage(err));
        });
      });
      const events = await services.sessions.output(app, machine, session, {
        ...(query.offset !== undefined ? { offset: query.offset } : {}),
        ...(query.tail_bytes !== undefined ? { tailBytes: query.tail_bytes } : {}),
        follow: true, encoding: query.encoding,
      }, signal);
      for await (const event of events) {
        if (socket.readyState !== socket.OPEN) break;
        socket.send(JSON.stringify(event));
        await drained(socket);
      }
      if (socket.readyState === socket.OPEN) socket.close(1000, 'session ended');
    },
  }),
  route({
    access: { action: 'exec', command: sessionCommand },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/sessions/{session_id}/input', tag: 'Sessions',
    summary: "Write to the session's stdin (started with stdin or tty); answers once the bytes are in its pipe",
    params: SessionParams, body: SessionInputRequestSchema, response: OkSchema,
    handler: async ({ services, params, body }) => {
      await services.sessions.write(params.app_name, params.machine_id, params.session_id, Buffer.from(body.data, body.encoding));
      return { ok: true };
    },
  }),
  route({
    access: { action: 'exec', command: sessionCommand },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/sessions/{session_id}/kill', tag: 'Sessions',
    summary: 'Signal the session\'s command and its process group (default SIGKILL); answers the session once it ended, or after 5 s',
    params: SessionParams, body: KillSessionRequestSchema, bodyOptional: true, response: SessionSchema,
    handler: ({ services, params, body }) => services.sessions.kill(params.app_name, params.machine_id, params.session_id, body?.signal),
  }),
];
