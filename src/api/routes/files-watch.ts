import type { ServerResponse } from 'node:http';
import { FileWatchMessageSchema, FileWatchQuerySchema, type FileWatchMessage } from '../../protocol/file-watch.ts';
import { HANDLED, route } from '../route.ts';
import { MachineParams } from './params.ts';

// GET …/files/watch: changes to a started machine's files as they happen, as server-sent events
// or, upgraded, as WebSocket messages (machines/file-watches.ts, storage/machine-fs-watch.ts).

/** Output held for a reader that does not keep up; past it, changes are dropped and counted. */
const MAX_BUFFERED_BYTES = 1024 * 1024;
const KEEP_ALIVE_MS = 15_000;

export const fileWatchRoutes = [
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/files/watch', tag: 'Files',
    summary: 'Watch a directory (?path=&recursive=) of a started machine: a text/event-stream with one event per change ' +
      '(event: create|modify|delete|rename, data: {"type","path","from"?,"kind"?}, paths as the machine sees them), after an ' +
      '`event: ready` once every directory is watched; `overflow` says changes were lost, `end` (the last) that the machine stopped. ' +
      'Upgraded to a WebSocket it sends the same messages as JSON. At most 16 watches per machine, 4096 directories per watch',
    params: MachineParams, query: FileWatchQuerySchema, response: FileWatchMessageSchema, produces: 'text/event-stream',
    handler: async ({ services, params, query, reply, signal }) => {
      let res: ServerResponse | undefined;
      const stream = new Stream((msg) => `event: ${msg.type}\ndata: ${JSON.stringify(msg)}\n\n`, (text) => res!.write(text), () => res!.writableLength);
      let finish!: () => void;
      const finished = new Promise<void>((resolve) => (finish = resolve));
      const send = (msg: FileWatchMessage) => {
        if (!res) {
          reply.hijack();
          res = reply.raw;
          res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
        }
        if (res.writableEnded || res.destroyed) return;
        stream.send(msg);
        if (msg.type === 'end') {
          res.end();
          finish();
        }
      };
      const watch = await services.fileWatches.open(params.app_name, params.machine_id, query.path, query.recursive, send);
      const keepAlive = setInterval(() => res?.write(': keep-alive\n\n'), KEEP_ALIVE_MS);
      const onAbort = () => watch.close();
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) watch.close(); // gone while the watch was being set up
      res?.on('drain', () => stream.drained());
      try {
        await finished;
      } finally {
        clearInterval(keepAlive);
        signal.removeEventListener('abort', onAbort);
      }
      return HANDLED;
    },
    websocket: async (socket, { services, params, query }) => {
      const stream = new Stream((msg) => JSON.stringify(msg), (text) => socket.send(text), () => socket.bufferedAmount);
      const watch = await services.fileWatches.open(params.app_name, params.machine_id, query.path, query.recursive, (msg) => {
        if (socket.readyState !== socket.OPEN) return;
        stream.send(msg);
        if (msg.type === 'end') socket.close(1000, 'end');
      });
      socket.on('close', () => watch.close());
      if (socket.readyState !== socket.OPEN) watch.close(); // gone while the watch was being set up
      // ws has no drain event: look again while changes are being dropped.
      const poll = setInterval(() => stream.drained(), 100);
      socket.on('close', () => clearInterval(poll));
    },
  }),
];

/** Writes messages unless the reader is MAX_BUFFERED_BYTES behind; then counts what it drops and says so once it catches up. */
class Stream {
  readonly #write: (text: string) => void;
  readonly #buffered: () => number;
  readonly #format: (msg: FileWatchMessage) => string;
  #dropped = 0;

  constructor(format: (msg: FileWatchMessage) => string, write: (text: string) => void, buffered: () => number) {
    this.#format = format;
    this.#write = write;
    this.#buffered = buffered;
  }

  send(msg: FileWatchMessage): void {
    // ready and end reach the reader however far behind it is.
    if (msg.type !== 'ready' && msg.type !== 'end' && this.#buffered() > MAX_BUFFERED_BYTES) {
      this.#dropped++;
      return;
    }
    this.drained();
    this.#write(this.#format(msg));
  }

  drained(): void {
    if (this.#dropped === 0 || this.#buffered() > MAX_BUFFERED_BYTES / 2) return;
    const dropped = this.#dropped;
    this.#dropped = 0;
    this.#write(this.#format({ type: 'overflow', dropped }));
  }
}
