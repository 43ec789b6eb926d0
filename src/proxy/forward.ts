import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { parseReplay, type Replay } from './replay.ts';

// The hot path: one request to a machine through a pooled connection, its response written
// straight into the client's response as it arrives (no intermediate stream), with backpressure
// both ways. A response that asks for a replay is swallowed and reported instead.

// RFC 9110 §7.6.1: these describe one connection and are not forwarded.
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);

/** What came back when it was not a response for the client. */
export type Outcome = { replay?: Replay };

export type ForwardRequest = { method: string; path: string; headers: string[]; body: Buffer | Readable | null };

/** `answered` is told the status as the response headers go out (not for a replay). */
export function forward(pool: Dispatcher, request: ForwardRequest, res: ServerResponse, requestId: string, answered: (status: number) => void): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    let replay: Replay | undefined;
    let ended = false;
    let wrote = false;
    let controller: Dispatcher.DispatchController | undefined;
    const onClientGone = () => {
      if (!ended) controller?.abort(new Error('the client went away'));
    };
    res.once('close', onClientGone);
    const finish = () => {
      ended = true;
      res.off('close', onClientGone);
    };
    pool.dispatch(
      { method: request.method as Dispatcher.HttpMethod, path: request.path, headers: request.headers, body: request.body },
      {
        onRequestStart(c) {
          controller = c;
        },
        onResponseStart(c, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string) {
          replay = parseReplay(headers['fly-replay']);
          if (replay) return;
          const out: Record<string, string | string[]> = { 'fly-request-id': requestId };
          for (const name in headers) {
            const v = headers[name];
            if (v !== undefined && !HOP_BY_HOP.has(name)) out[name] = v;
          }
          res.writeHead(statusCode, statusMessage || undefined, out);
          answered(statusCode);
          // A response that pauses after its headers (SSE) must not hold them back; one that
          // arrives whole sends headers and body together.
          queueMicrotask(() => {
            if (!ended && !wrote && !c.aborted) res.flushHeaders();
          });
        },
        onResponseData(c, chunk: Buffer) {
          if (replay) return;
          wrote = true;
          if (!res.write(chunk)) {
            c.pause();
            res.once('drain', () => c.resume());
          }
        },
        onResponseEnd() {
          finish();
          if (replay) return resolve({ replay });
          res.end();
          resolve({});
        },
        onResponseError(_c, err: Error) {
          finish();
          reject(err);
        },
      },
    );
  });
}
