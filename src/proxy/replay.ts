import { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { HangarError } from '../protocol/errors.ts';

// fly-replay: a machine answers with `fly-replay: instance=<id>` (or app=, elsewhere=true, with
// state= passed along) and the proxy sends the same request there instead. Bodies up to 1 MiB are
// kept so they can be sent again, while the budget for all of them lasts; a larger one, or one
// over the budget, streams through and cannot be replayed.

export const REPLAY_BODY_LIMIT = 1024 * 1024;
export const MAX_REPLAYS = 3;
/** What all requests together may keep for replays, by default. */
export const DEFAULT_REPLAY_BUFFER_BYTES = 64 * 1024 * 1024;

export type Replay = { instance?: string; app?: string; elsewhere: boolean; state?: string };

export function parseReplay(header: string | string[] | undefined): Replay | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (!value) return undefined;
  const fields = new Map(value.split(/[;,]/).map((p) => p.trim().split('=') as [string, string?]).map(([k, v]) => [k.toLowerCase(), v ?? '']));
  return {
    ...(fields.get('instance') ? { instance: fields.get('instance') } : {}),
    ...(fields.get('app') ? { app: fields.get('app') } : {}),
    ...(fields.get('state') ? { state: fields.get('state') } : {}),
    elsewhere: fields.get('elsewhere') === 'true',
  };
}

/**
 * The memory all requests together may keep for replays. Without it, N clients stalling uploads
 * would hold N MiB; with it, a body that does not fit streams through and cannot be replayed.
 */
export class ReplayBuffers {
  readonly #limitBytes: number;
  #usedBytes = 0;

  constructor(limitBytes: number) {
    this.#limitBytes = limitBytes;
  }

  /** Reserves `bytes`; false (and nothing reserved) when they do not fit. */
  take(bytes: number): boolean {
    if (this.#usedBytes + bytes > this.#limitBytes) return false;
    this.#usedBytes += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#usedBytes -= bytes;
  }
}

export type ReplayableBody = {
  /** The body to send (again); throws when it cannot be sent a second time. */
  again: () => Buffer | Readable | null;
  replayable: boolean;
  /** Gives back what the body reserved of the replay buffers; call when the request is done. */
  release: () => void;
};

/**
 * The request body as something that can be sent more than once, or, past REPLAY_BODY_LIMIT or
 * what is left of `buffers`, once.
 */
export async function replayableBody(req: IncomingMessage, buffers: ReplayBuffers): Promise<ReplayableBody> {
  let reserved = 0;
  let released = false;
  const release = () => {
    if (!released) buffers.give(reserved);
    released = true;
  };
  if (req.method === 'GET' || req.method === 'HEAD') return { again: () => null, replayable: true, release };
  const chunks: Buffer[] = [];
  const iterator = req[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = (await iterator.next()) as IteratorResult<Buffer>;
      if (next.done) {
        const whole = Buffer.concat(chunks);
        return { again: () => whole, replayable: true, release };
      }
      chunks.push(next.value);
      const tooLarge = reserved + next.value.length > REPLAY_BODY_LIMIT;
      if (!tooLarge && buffers.take(next.value.length)) {
        reserved += next.value.length;
        continue;
      }
      const rest = (async function* () {
        yield* chunks;
        for (let n = await iterator.next(); !n.done; n = await iterator.next()) yield n.value as Buffer;
      })();
      let used = false;
      return {
        again: () => {
          if (!used) {
            used = true;
            // One chunk ahead at most: the machine's pace, not the client's, decides what is held here.
            return Readable.from(rest, { highWaterMark: 1 });
          }
          throw tooLarge
            ? new HangarError('body_too_large', `a request body over ${REPLAY_BODY_LIMIT / 1048576} MiB cannot be replayed`, {
              hint: 'send smaller bodies to endpoints that answer with fly-replay',
            })
            : new HangarError('replay_unavailable', 'the proxy was keeping too many request bodies to keep this one for a replay', {
              hint: 'retry the request; bodies are kept for fly-replay only while the proxy has room',
            });
        },
        replayable: false,
        release,
      };
    }
  } catch (err) {
    release();
    throw err;
  }
}
