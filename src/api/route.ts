import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import type { z } from 'zod';
import type { ApiServices } from './services.ts';
import type { Access, RouteAccess } from './access.ts';
import type { Caller } from '../machines/machine-service.ts';

// One table of routes feeds both the HTTP server and /openapi.json, so the two cannot drift.

export type RouteContext<P, Q, B> = {
  params: P;
  query: Q;
  body: B;
  headers: IncomingHttpHeaders;
  requestId: string;
  /** Aborts when the client goes away. */
  signal: AbortSignal;
  services: ApiServices;
  /** What the request's token may do; the route's own access was checked before the handler. */
  access: Access;
  /** Who made the call: limits apply to it (machines/limits.ts), its token's limits caveats too. */
  caller: Caller;
  /** For routes that stream their body: with Content-Type application/octet-stream or
   * application/x-tar, `req.body` is the unread request stream (no size limit applies). */
  req: FastifyRequest;
  reply: FastifyReply;
};

/** Returned by a handler that wrote the response itself (streams). */
export const HANDLED = Symbol('handled');

type Schema = z.ZodType;
type Infer<S> = S extends z.ZodType ? z.output<S> : undefined;

export type RouteDef<P extends Schema | undefined = Schema | undefined, Q extends Schema | undefined = Schema | undefined, B extends Schema | undefined = Schema | undefined> = {
  method: 'GET' | 'POST' | 'DELETE' | 'PUT' | 'PATCH';
  /** OpenAPI-style path, e.g. /v1/apps/{app_name}. */
  path: string;
  summary: string;
  tag: string;
  params?: P;
  query?: Q;
  body?: B;
  /** The raw request body's content type, for routes that stream it (documentation only). */
  consumes?: 'application/octet-stream' | 'application/x-tar';
  /** Body may be absent (Fly clients POST …/start with no body). */
  bodyOptional?: boolean;
  response?: Schema;
  /** Success status; 200 unless set. */
  status?: number;
  /** Answer with text/plain or an event stream rather than JSON (documentation only). */
  produces?: string;
  public?: boolean;
  /** What the route does, for tokens narrowed by caveats (api/access.ts); public routes need none. */
  access?: RouteAccess;
  /**
   * A call naming a machine is its activity, holding it busy (no autostop, no idle_stop) until
   * it ends, unless it only reads the machine's record (state, events, lease, …/wait): a robot
   * polling for a state must not keep the machine from reaching it.
   */
  observes?: boolean;
  /** Serves a WebSocket on this GET path; `handler` answers requests that do not upgrade.
   * Whatever it throws is sent as an error message and closes the socket. */
  websocket?: (socket: WebSocket, ctx: RouteContext<Infer<P>, Infer<Q>, undefined>) => Promise<void> | void;
  handler: (ctx: RouteContext<Infer<P>, Infer<Q>, Infer<B>>) => Promise<unknown> | unknown;
};

export function route<P extends Schema | undefined, Q extends Schema | undefined, B extends Schema | undefined>(
  def: RouteDef<P, Q, B>,
): RouteDef {
  return def as unknown as RouteDef;
}
