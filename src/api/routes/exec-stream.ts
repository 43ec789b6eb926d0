import { StringDecoder } from 'node:string_decoder';
import { z } from 'zod';
import type { WebSocket } from 'ws';
import { HangarError } from '../../protocol/errors.ts';
import {
  EXEC_STREAM_DEFAULT_TIMEOUT_S, ExecEventSchema, ExecStreamRequestSchema, ProcessStatSchema, PsQuerySchema, type ExecEvent,
} from '../../protocol/schemas.ts';
import { listProcesses, startExec, type MachineExec } from '../../machines/machine-exec.ts';
import type { StoppedNotice } from '../../machines/exec-wake.ts';
import type { ExecExit } from '../../runtime/driver.ts';
import { checkpointBefore } from './machine-actions.ts';
import { HANDLED, route } from '../route.ts';
import { MachineParams } from './params.ts';

// Commands whose output arrives as it is produced: NDJSON over HTTP, or a WebSocket that also
// carries stdin, resizes (for a tty) and kill. Either way the exit event ends the stream.

const START_TIMEOUT_MS = 30_000;
const TTY_DEFAULT_TIMEOUT_S = 86_400;

const WsStartSchema = ExecStreamRequestSchema.extend({
  type: z.literal('start'),
  tty: z.boolean().optional(),
  rows: z.int().min(1).max(1000).default(24),
  cols: z.int().min(1).max(1000).default(80),
});

const WsClientMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('stdin'), data: z.string() }),
  z.object({ type: z.literal('stdin_close') }),
  z.object({ type: z.literal('resize'), rows: z.int().min(1).max(1000), cols: z.int().min(1).max(1000) }),
  z.object({ type: z.literal('kill') }),
]);

function exitEvent(exit: ExecExit & { stopped?: StoppedNotice }, started: boolean): ExecEvent {
  return {
    type: 'exit',
    exit_code: exit.exitCode,
    ...(exit.exitSignal !== undefined ? { exit_signal: exit.exitSignal } : {}),
    timed_out: exit.timedOut,
    cancelled: exit.cancelled,
    ...(started ? { started } : {}),
    ...(exit.stopped ? { stopped: exit.stopped } : {}),
  };
}

/** Sends output events as they come; `send` returning false pauses the command's output until `drained`. */
function forwardOutput(proc: MachineExec, send: (event: ExecEvent) => boolean, drained: (resume: () => void) => void): void {
  for (const [stream, name] of [[proc.stdout, 'stdout'], [proc.stderr, 'stderr']] as const) {
    const decoder = new StringDecoder('utf8');
    stream.on('data', (chunk: Buffer) => {
      const data = decoder.write(chunk);
      if (data && !send({ type: name, data })) {
        proc.stdout.pause();
        proc.stderr.pause();
        drained(() => {
          proc.stdout.resume();
          proc.stderr.resume();
        });
      }
    });
    stream.on('end', () => {
      const rest = decoder.end();
      if (rest) send({ type: name, data: rest });
    });
  }
}

function parseMessage<S extends z.ZodType>(schema: S, raw: unknown): z.output<S> {
  let json: unknown;
  try {
    json = JSON.parse(String(raw));
  } catch {
    throw new HangarError('invalid_json', 'websocket message is not JSON', { hint: 'send one JSON object per message, e.g. {"type":"stdin","data":"ls\\n"}' });
  }
  return schema.parse(json);
}

/**
 * Holds a socket's messages until they are taken. ws may emit several messages in one tick (one
 * TCP read), so a listener attached after an await would miss some; this one is attached at once.
 */
class Inbox {
  readonly #queue: unknown[] = [];
  #wake: (() => void) | undefined;
  #handler: ((raw: unknown) => void) | undefined;

  constructor(socket: WebSocket) {
    socket.on('message', (raw) => {
      if (this.#handler) this.#handler(raw);
      else {
        this.#queue.push(raw);
        this.#wake?.();
      }
    });
  }

  async first(timeoutMs: number): Promise<unknown> {
    if (this.#queue.length === 0) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new HangarError('bad_request', `no start message within ${timeoutMs / 1000}s`, {
          hint: 'send {"type":"start","command":[...]} right after connecting',
        })), timeoutMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.#queue.shift();
  }

  /** From now on every message, those already waiting first, goes to `handler`. */
  drainTo(handler: (raw: unknown) => void): void {
    this.#handler = handler;
    this.#queue.splice(0).forEach(handler);
  }
}

export const execStreamRoutes = [
  route({
    access: { action: 'exec', command: ({ body }: { body: { command: string[] } }) => body.command },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/exec/stream', tag: 'Machines',
    summary:
      'Run a command and stream its output as NDJSON, one ExecEvent per line ({"type":"stdout"|"stderr","data"}), ended by ' +
      `{"type":"exit",...}. Closing the connection kills the command. Timeout in seconds, default ${EXEC_STREAM_DEFAULT_TIMEOUT_S}. ` +
      'A stopped machine is started first (header x-hangar-machine-started: true) unless autostart is off',
    params: MachineParams, body: ExecStreamRequestSchema, response: ExecEventSchema, produces: 'application/x-ndjson',
    handler: async ({ services, params, body, reply, signal, caller }) => {
      const checkpoint = body.checkpoint ? await checkpointBefore(services, params, body.command) : undefined;
      const proc = await startExec(services.machines, services.runner, params.app_name, params.machine_id, {
        command: body.command, timeoutS: body.timeout ?? EXEC_STREAM_DEFAULT_TIMEOUT_S, env: body.env, cwd: body.cwd, signal, caller,
      });
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'application/x-ndjson', 'cache-control': 'no-cache', 'x-request-id': reply.request.id,
        ...(proc.started ? { 'x-hangar-machine-started': 'true' } : {}),
      });
      forwardOutput(proc, (event) => res.write(JSON.stringify(event) + '\n'), (resume) => res.once('drain', resume));
      proc.stdin.end(body.stdin ?? '');
      res.end(JSON.stringify({ ...exitEvent(await proc.exit, proc.started), ...(checkpoint ? { checkpoint_id: checkpoint } : {}) }) + '\n');
      return HANDLED;
    },
  }),
  route({
    access: { action: 'exec' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/exec/ws', tag: 'Machines',
    summary:
      'WebSocket exec. Send {"type":"start","command":[...],"tty"?,"rows"?,"cols"?,"timeout"?,"env"?,"cwd"?} first; then ' +
      '{"type":"stdin","data"}, {"type":"stdin_close"}, {"type":"resize","rows","cols"} (tty) or {"type":"kill"}. The server sends ' +
      'ExecEvents ending with the exit event, or {"type":"error","code","error","hint"} and closes with 1008',
    params: MachineParams, response: ExecEventSchema,
    handler: () => {
      throw new HangarError('bad_request', 'this endpoint speaks WebSocket', {
        hint: 'connect with a WebSocket client (Upgrade: websocket) and send {"type":"start","command":["sh"]}; or use POST …/exec/stream',
      });
    },
    websocket: async (socket, { services, params, signal, access, caller }) => {
      const inbox = new Inbox(socket);
      const start = parseMessage(WsStartSchema, await inbox.first(START_TIMEOUT_MS));
      access.checkCommand(params.app_name, params.machine_id, start.command);
      const cancel = new AbortController();
      const proc = await startExec(services.machines, services.runner, params.app_name, params.machine_id, {
        command: start.command,
        timeoutS: start.timeout ?? (start.tty ? TTY_DEFAULT_TIMEOUT_S : EXEC_STREAM_DEFAULT_TIMEOUT_S),
        env: start.env,
        cwd: start.cwd,
        ...(start.tty ? { tty: { rows: start.rows, cols: start.cols } } : {}),
        signal: AbortSignal.any([signal, cancel.signal]),
        caller,
      });
      if (start.stdin !== undefined) proc.stdin.end(start.stdin);
      const onMessage = (raw: unknown) => {
        try {
          const msg = parseMessage(WsClientMessageSchema, raw);
          if (msg.type === 'stdin') proc.stdin.write(msg.data);
          else if (msg.type === 'stdin_close') proc.stdin.end();
          else if (msg.type === 'resize') void proc.resize(msg.rows, msg.cols).catch(() => {});
          else cancel.abort();
        } catch (err) {
          const e = err instanceof HangarError ? err : new HangarError('validation_failed', `bad message: ${(err as Error).message}`, {
            hint: 'messages are {"type":"stdin","data"}, {"type":"stdin_close"}, {"type":"resize","rows","cols"} or {"type":"kill"}',
          });
          socket.send(JSON.stringify({ type: 'error', code: e.code, error: e.message, hint: e.hint }));
        }
      };
      inbox.drainTo(onMessage);
      forwardOutput(proc, (event) => {
        socket.send(JSON.stringify(event));
        return socket.bufferedAmount < 1024 * 1024;
      }, (resume) => {
        const poll = setInterval(() => {
          if (socket.bufferedAmount < 1024 * 1024 || socket.readyState !== socket.OPEN) {
            clearInterval(poll);
            resume();
          }
        }, 20);
      });
      const exit = await proc.exit;
      if (socket.readyState === socket.OPEN) {
        socket.send(JSON.stringify(exitEvent(exit, proc.started)));
        socket.close(1000, 'exited');
      }
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/ps', tag: 'Machines',
    summary: "The machine's processes, with the sockets each listens on (sort_by pid|cpu|rss|rtime|stime|command, order asc|desc)",
    params: MachineParams, query: PsQuerySchema, response: z.array(ProcessStatSchema),
    handler: ({ services, params, query }) =>
      listProcesses(services.machines, services.runner, params.app_name, params.machine_id, { sortBy: query.sort_by, order: query.order }),
  }),
];
