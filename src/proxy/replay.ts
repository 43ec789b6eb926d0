import { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { HangarError } from '../protocol/errors.ts';

// fly-replay: a machine answers with `fly-replay: instance=<id>` (or app=, elsewhere=true, with
// state= passed along) and the proxy sends the same request there instead. Bodies up to 1 MiB are
// kept so they can be sent again; a larger one streams through and cannot be replayed.

export const REPLAY_BODY_LIMIT = 1024 * 1024;
export const MAX_REPLAYS = 3;

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

/** The request body as something that can be sent more than once, or, past the limit, once. */
export async function replayableBody(req: IncomingMessage): Promise<{ again: () => Buffer | Readable | null; replayable: boolean }> {
  if (req.method === 'GET' || req.method === 'HEAD') return { again: () => null, replayable: true };
  const chunks: Buffer[] = [];
  let size = 0;
  const iterator = req[Symbol.asyncIterator]();
  for (;;) {
    const next = (await iterator.next()) as IteratorResult<Buffer>;
    if (next.done) {
      const whole = Buffer.concat(chunks);
      return { again: () => whole, replayable: true };
    }
    chunks.push(next.value);
    size += next.value.length;
    if (size > REPLAY_BODY_LIMIT) {
      const rest = (async function* () {
        yield* chunks;
        for (let n = await iterator.next(); !n.done; n = await iterator.next()) yield n.value as Buffer;
      })();
      let used = false;
      return {
        again: () => {
          if (used) {
            throw new HangarError('body_too_large', `a request body over ${REPLAY_BODY_LIMIT / 1048576} MiB cannot be replayed`, {
              hint: 'send smaller bodies to endpoints that answer with fly-replay',
            });
          }
          used = true;
          return Readable.from(rest);
        },
        replayable: false,
      };
    }
  }
}
