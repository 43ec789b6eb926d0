import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { STATUS_OF } from '../api/error-status.ts';
import { HOP_BY_HOP as EDGE_HOP_BY_HOP } from '../proxy/forward.ts';
import { HangarError, isHangarError } from '../protocol/errors.ts';

// What Hangar's two credential proxies (the tokenizer, and the egress proxy of app secrets) do
// alike around the credential itself: which headers go on, relaying the upstream's answer, and
// answering a refusal as JSON with a code and a hint.

/** What the edge proxy drops (hop-by-hop headers and `host`, which each sets itself), and the credential proxies' own. */
const HOP_BY_HOP = new Set([...EDGE_HOP_BY_HOP, 'proxy-authorization', 'proxy-tokenizer', 'proxy-authenticate']);

/** The request's end-to-end headers, without those its Connection header names. */
export function forwardedHeaders(req: IncomingMessage): OutgoingHttpHeaders {
  const named = new Set((req.headers.connection ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
  const out: OutgoingHttpHeaders = {};
  for (const [name, values] of Object.entries(req.headersDistinct)) {
    if (HOP_BY_HOP.has(name) || named.has(name) || !values) continue;
    out[name] = values.length === 1 ? values[0] : values;
  }
  return out;
}

/**
 * Sends the upstream's answer on to `res` once it comes (its headers through `rewrite`, when
 * given), and resolves when it has been sent or cut; a client gone cuts the upstream request.
 * Rejects with upstream_unreachable (saying `what` the proxy does) when the upstream fails
 * or keeps silent past `timeoutMs`.
 */
export function relayUpstream(
  upstream: ClientRequest,
  res: ServerResponse,
  opts: { host: string; what: string; timeoutMs: number; rewrite?: (value: string) => string; close?: boolean },
): Promise<void> {
  const failed = new Promise<never>((_, reject) => {
    upstream.once('timeout', () => upstream.destroy(new Error(`no answer within ${opts.timeoutMs / 1000}s`)));
    upstream.once('error', (err) => {
      if (res.headersSent) res.destroy();
      reject(new HangarError('upstream_unreachable', `could not reach ${opts.host} over HTTPS: ${err.message}`, { hint: `check the host; ${opts.what}` }));
    });
  });
  failed.catch(() => {}); // an error after the answer was sent has nobody left to tell
  const relayed = new Promise<void>((resolve) => {
    upstream.once('response', (answer) => {
      const out: OutgoingHttpHeaders = {};
      const rewrite = opts.rewrite ?? ((v: string) => v);
      for (const [name, value] of Object.entries(answer.headers)) {
        if (HOP_BY_HOP.has(name) || value === undefined) continue;
        out[name] = Array.isArray(value) ? value.map(rewrite) : rewrite(value);
      }
      if (opts.close) out.connection = 'close';
      res.writeHead(answer.statusCode ?? 502, out);
      answer.pipe(res);
      answer.once('end', () => resolve());
      answer.once('error', () => {
        res.destroy();
        resolve();
      });
    });
    res.once('close', () => upstream.destroy());
  });
  return Promise.race([relayed, failed]);
}

/** Answers with the error (or cuts a response already under way); returns its code. `what` names the proxy in an internal error. */
export function sendProxyError(res: ServerResponse, err: unknown, what: string, extraHeaders: (status: number) => OutgoingHttpHeaders = () => ({})): string {
  const known = isHangarError(err) ? err : new HangarError('internal', `internal ${what} error`, { hint: 'retry; if it persists, check the daemon log' });
  if (res.headersSent) {
    res.destroy();
    return known.code;
  }
  const status = STATUS_OF[known.code];
  const body = JSON.stringify({ error: known.message, code: known.code, ...(known.hint ? { hint: known.hint } : {}) });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close', ...extraHeaders(status) });
  res.end(body);
  return known.code;
}
