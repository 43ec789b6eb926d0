import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { ConnectionGuard, type ConnectionBudget } from './connection-budget.ts';
import { GATEWAY_API_PORT } from './firewall.ts';

// The Machines API inside each app's network, as on Fly: `_api.internal:4280` is the app's
// gateway, whose requests go to the API's own HTTP server. So a machine gets exactly what a
// caller on the host gets for the token it sends (and 401 without one), except that the API
// knows the request came from the machine's private address (originOf), which a token bound to
// that machine needs. The address is the connection's source, which machines cannot forge
// (their network drops spoofed sources), and only connections to a gateway count.
//
// Anyone in a machine can connect without a token, so connections are budgeted (per machine
// address and over all gateways, shared with their DNS) and parsed by an HTTP server of the
// gateways' own with tight timeouts: a request head must arrive within headerTimeoutMs and a
// connection between requests is closed after keepAliveMs. A request in progress (an exec
// stream, a log follow) is not timed.

export const GATEWAY_HEADER_TIMEOUT_MS = 10_000;
export const GATEWAY_KEEP_ALIVE_MS = 5_000;
/** Connections to all gateways' services (API and DNS over TCP) at once, and from one machine. */
export const GATEWAY_MAX_CONNECTIONS = 1024;
export const GATEWAY_MAX_CONNECTIONS_PER_MACHINE = 64;

export type GatewayApiOptions = {
  /** The server that answers requests (the API's), once it exists. */
  target: () => HttpServer | undefined;
  budget: ConnectionBudget;
  /** The port on each gateway (the API's by default) and the service's name in refusals. */
  port?: number;
  service?: string;
  headerTimeoutMs?: number;
  keepAliveMs?: number;
};

export class GatewayApi {
  readonly #guard: ConnectionGuard;
  readonly #http: HttpServer;
  readonly #servers = new Map<number, Server>();
  readonly #headerTimeoutMs: number;
  readonly #port: number;
  /** Per connection, the deadline for the request head it owes. */
  readonly #headDeadlines = new WeakMap<Socket, NodeJS.Timeout>();
  /** Connections accepted by a gateway, as opposed to the API's own listener. */
  readonly #accepted = new WeakSet<Socket>();

  constructor(opts: GatewayApiOptions) {
    this.#guard = new ConnectionGuard(opts.budget, opts.service ?? '_api.internal');
    this.#port = opts.port ?? GATEWAY_API_PORT;
    this.#headerTimeoutMs = opts.headerTimeoutMs ?? GATEWAY_HEADER_TIMEOUT_MS;
    // Node enforces headersTimeout only on servers that listen themselves; this one is handed
    // sockets, so the head deadline is kept here (#awaitHead).
    this.#http = createHttpServer({
      requestTimeout: 0,
      keepAliveTimeout: opts.keepAliveMs ?? GATEWAY_KEEP_ALIVE_MS,
      connectionsCheckingInterval: 1_000,
    });
    this.#http.on('request', (req, res) => {
      clearTimeout(this.#headDeadlines.get(req.socket));
      if (this.#guard.refuse(req, res)) return;
      res.once('finish', () => this.#awaitHead(req.socket));
      const target = opts.target();
      if (target) target.emit('request', req, res);
      else res.destroy();
    });
    this.#http.on('upgrade', (req, socket, head) => {
      clearTimeout(this.#headDeadlines.get(req.socket));
      if (this.#guard.refuseUpgrade(req.socket)) return;
      const target = opts.target();
      if (target) target.emit('upgrade', req, socket, head);
      else socket.destroy();
    });
    // A proxy's CONNECT goes to the target if it answers them (the tokenizer refuses them itself).
    this.#http.on('connect', (req, socket, head) => {
      clearTimeout(this.#headDeadlines.get(req.socket));
      if (this.#guard.refuseUpgrade(req.socket)) return;
      const target = opts.target();
      if (target && target.listenerCount('connect') > 0) target.emit('connect', req, socket, head);
      else socket.destroy();
    });
  }

  /** Listens on `gateway`:port (4280 for the API) for the app of `subnetIndex`. Idempotent. */
  async serve(subnetIndex: number, gateway: string): Promise<void> {
    if (this.#servers.has(subnetIndex)) return;
    const server = createServer((socket) => {
      this.#accepted.add(socket);
      this.#guard.onConnection(socket);
      if (socket.destroyed) return;
      this.#awaitHead(socket);
      socket.once('close', () => clearTimeout(this.#headDeadlines.get(socket)));
      this.#http.emit('connection', socket);
    });
    this.#servers.set(subnetIndex, server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => {
        this.#servers.delete(subnetIndex);
        reject(err);
      });
      server.listen(this.#port, gateway, () => resolve());
    });
    // Accept failures (out of descriptors, a connection reset before it was taken) are not fatal.
    server.on('error', () => undefined);
  }

  /** The machine a request came from, when it came through a gateway. */
  originOf(req: IncomingMessage): { machineIp: string } | undefined {
    const ip = req.socket.remoteAddress;
    return this.#accepted.has(req.socket) && ip ? { machineIp: ip } : undefined;
  }

  /** Closes `socket` unless a request head arrives within the header timeout. */
  #awaitHead(socket: Socket): void {
    if (socket.destroyed) return;
    clearTimeout(this.#headDeadlines.get(socket));
    this.#headDeadlines.set(socket, setTimeout(() => socket.destroy(), this.#headerTimeoutMs).unref());
  }

  stop(subnetIndex: number): void {
    this.#servers.get(subnetIndex)?.close();
    this.#servers.delete(subnetIndex);
  }

  close(): void {
    for (const index of [...this.#servers.keys()]) this.stop(index);
    this.#http.closeAllConnections();
  }
}
