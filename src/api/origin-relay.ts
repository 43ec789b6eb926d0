import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { RequestOrigin } from './access.ts';

// The MCP endpoint serves each session by calling this daemon's REST API on loopback with the
// caller's token; a request from inside a machine must keep its origin on those calls, or a
// token bound to that machine (from_machine) would fail on every tool call. The endpoint gets a
// random key per session, sent as a header; only a key this process issued carries an origin,
// so a client cannot claim one by sending the header itself.

export const ORIGIN_RELAY_HEADER = 'x-hangar-origin-relay';

export class OriginRelay {
  readonly #origins = new Map<string, RequestOrigin>();

  issue(origin: RequestOrigin): string {
    const key = randomBytes(24).toString('base64url');
    this.#origins.set(key, origin);
    return key;
  }

  release(key: string): void {
    this.#origins.delete(key);
  }

  /** The origin a request relays, if it carries a key this relay issued. */
  originOf(req: IncomingMessage): RequestOrigin | undefined {
    const key = req.headers[ORIGIN_RELAY_HEADER];
    return typeof key === 'string' ? this.#origins.get(key) : undefined;
  }
}
