import type { FileWatchMessage } from '../protocol/file-watch.ts';
import { HangarApiError } from './errors.ts';
import { eventData } from './response-stream.ts';

// A watch of a machine's directory (GET …/files/watch), as the SDK hands it out once the daemon
// says every directory is watched: iterate it for changes as they happen; it ends when the machine
// stops, the directory goes, or `close()`.
//
//   const watch = await machine.files.watch('/app', { recursive: true });
//   await machine.exec(['sh', '-c', 'echo hi > /app/x']).wait();
//   for await (const change of watch) { console.log(change.type, change.path); break; }
//   watch.close();

/** A change, or a notice that some were lost (overflow) or a new directory is not watched (unwatched). */
export type FileWatchEvent = Exclude<FileWatchMessage, { type: 'ready' | 'end' }>;

export class FileWatch implements AsyncIterable<FileWatchEvent> {
  /** The directory watched, after following symlinks, as the machine sees it. */
  readonly path: string;
  /** Directories watched when it became ready. */
  readonly directories: number;
  /** Why it ended, once it has. */
  endReason: string | undefined;
  readonly #messages: AsyncGenerator<FileWatchMessage>;
  readonly #abort: AbortController;

  private constructor(ready: Extract<FileWatchMessage, { type: 'ready' }>, messages: AsyncGenerator<FileWatchMessage>, abort: AbortController) {
    this.path = ready.path;
    this.directories = ready.directories;
    this.#messages = messages;
    this.#abort = abort;
  }

  /** Reads the stream up to its `ready` message. */
  static async open(response: Promise<Response>, abort: AbortController): Promise<FileWatch> {
    const messages = sseMessages(await response);
    const first = await messages.next();
    if (first.done || first.value.type !== 'ready') {
      abort.abort();
      const why = first.done ? 'the stream closed' : first.value.type === 'end' ? first.value.reason : `it sent ${first.value.type} first`;
      throw new HangarApiError(502, { code: 'internal', hint: 'open the watch again' }, `the watch did not become ready: ${why}`);
    }
    return new FileWatch(first.value, messages, abort);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<FileWatchEvent> {
    try {
      for await (const msg of this.#messages) {
        if (msg.type === 'end') {
          this.endReason = msg.reason;
          return;
        }
        if (msg.type !== 'ready') yield msg;
      }
    } catch (err) {
      if (!this.#abort.signal.aborted) throw err;
    }
  }

  close(): void {
    this.endReason ??= 'closed';
    this.#abort.abort();
  }
}

async function* sseMessages(res: Response): AsyncGenerator<FileWatchMessage> {
  for await (const data of eventData(res)) yield JSON.parse(data) as FileWatchMessage;
}
