import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { Server as TlsServer, type TLSSocket } from 'node:tls';
import { Pool } from 'undici';
import { HangarError, isHangarError } from '../protocol/errors.ts';
import { ConnectionBudget, ConnectionGuard } from '../network/connection-budget.ts';
import type { AppService } from '../machines/app-service.ts';
import type { MachineService } from '../machines/machine-service.ts';
import type { ProxyMetrics } from './proxy-metrics.ts';
import { ConnectionHolds } from './connection-holds.ts';
import { forward, HOP_BY_HOP } from './forward.ts';
import { DEFAULT_REPLAY_BUFFER_BYTES, MAX_REPLAYS, ReplayBuffers, replayableBody } from './replay.ts';
import type { Route, RouteTable } from './route-table.ts';
import type { Activity } from '../machines/activity.ts';
import { Targets, type Picked } from './targets.ts';
import { forwardUpgrade } from './upgrade.ts';

// The edge: `<app>.<domain>` goes to one of the app's machines on its service port, waking a
// stopped machine first; fly-force-instance-id / fly-prefer-instance-id pick one, and a machine's
// fly-replay answer sends the request elsewhere. Upstream connections are pooled per machine;
// upgrades (WebSocket) get a connection of their own.

export const DEFAULT_PROXY_DOMAIN = 'localhost';
export const DEFAULT_HEADER_TIMEOUT_MS = 10_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

export const DEFAULT_MAX_CONNECTIONS = 4096;
export const DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 1024;

// Set by the proxy itself, as Fly's does; what a client sends under these names is dropped, so a
// machine can trust them (x-forwarded-for is the exception: the client's list is kept and the
// peer's address appended, as every proxy does).
const OWN = new Set([
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-ssl', 'x-request-id',
  'fly-client-ip', 'fly-forwarded-port', 'fly-region', 'fly-request-id', 'fly-replay-src',
]);

export type EdgeProxyOptions = {
  apps: AppService;
  /** Requests and streams count as their machine's activity. */
  activity: Activity;
  machines: MachineService;
  table: RouteTable;
  metrics: ProxyMetrics;
  domain: string;
  /** A client must send its request headers within this. */
  headerTimeoutMs?: number;
  /** A connection with no bytes either way for this long is closed (upgraded ones excepted). */
  idleTimeoutMs?: number;
  /** Hostnames outside `<app>.<domain>` that route to an app (custom certificates). */
  appForHostname?: (hostname: string) => string | undefined;
  /** Client connections open at once, over both listeners and per client address. */
  maxConnections?: number;
  maxConnectionsPerClient?: number;
  /** Memory for request bodies kept for a possible fly-replay, over all requests. */
  replayBufferBytes?: number;
};

export type EdgeProxy = {
  /** The plain-HTTP listener (not yet listening). */
  server: Server;
  /** Serves the proxy on another server too (the HTTPS listener); same routing, same pools. */
  attach(server: Server): void;
  close(): Promise<void>;
};

export function createEdgeProxy(opts: EdgeProxyOptions): EdgeProxy {
  const targets = new Targets({ table: opts.table, machines: opts.machines, apps: opts.apps, activity: opts.activity, onWake: (r) => opts.metrics.woke(r.app, r.id) });
  const holds = new ConnectionHolds();
  const guard = new ConnectionGuard(
    new ConnectionBudget({ total: opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS, perAddress: opts.maxConnectionsPerClient ?? DEFAULT_MAX_CONNECTIONS_PER_CLIENT }),
    'the proxy',
  );
  const replayBuffers = new ReplayBuffers(opts.replayBufferBytes ?? DEFAULT_REPLAY_BUFFER_BYTES);
  const pools = new Map<string, Pool>();
  const poolFor = (origin: string) => {
    let pool = pools.get(origin);
    if (!pool) pools.set(origin, (pool = new Pool(origin, { connections: 64, pipelining: 1 })));
    return pool;
  };
  // A destroyed machine's address may go to another machine: its connections go with it.
  opts.table.onRemove((route) => {
    void pools.get(route.origin)?.destroy().catch(() => undefined);
    pools.delete(route.origin);
  });
  const idPrefix = randomBytes(4).toString('hex');
  let requestCount = 0;
  const nextRequestId = () => `${idPrefix}${(++requestCount).toString(16).padStart(8, '0')}`;
  const appOf = (host: string | undefined) => resolveApp(host, opts.domain, opts.appForHostname);

  const proxyAnswered = (req: IncomingMessage, err: unknown, startedAt: number): HangarError & { status: number } => {
    const e = isHangarError(err) ? err : new HangarError('internal', 'proxy error', { hint: 'retry; if it persists, check the daemon log' });
    const status = statusFor(e);
    opts.metrics.answered(opts.metrics.statsFor(appLabel(req.headers.host, appOf), String(e.details?.machine_id ?? '')), status, startedAt);
    return Object.assign(e, { status });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, requestId: string, startedAt: number) => {
    const scanned = scanRequest(req, requestId, false);
    let app = appOf(scanned.host);
    // Routes first: asking a server its port is a syscall, too dear for every request.
    const httpsPort = opts.table.routes(app).some((r) => r.forceHttps) && httpsServer && !(req.socket as TLSSocket).encrypted ? portOf(httpsServer) : undefined;
    if (httpsPort !== undefined) {
      res.writeHead(301, { location: `https://${scanned.host.replace(/:\d+$/, '')}:${httpsPort}${req.url ?? '/'}`, 'fly-request-id': requestId });
      res.end();
      opts.metrics.answered(opts.metrics.statsFor(app, ''), 301, startedAt);
      return;
    }
    const { headers } = scanned;
    const body = req.method === 'GET' || req.method === 'HEAD' ? NO_BODY : await replayableBody(req, replayBuffers);
    try {
      let picked =
        holds.reuse(req.socket, app, scanned) ??
        holds.keep(req.socket, (!scanned.force && targets.tryPick(app, scanned)) || (await targets.pick(app, scanned)));
      for (let replays = 0; ; replays++) {
        const current = picked;
        const { route } = current;
        try {
          const stats = opts.metrics.statsFor(app, route.id);
          const request = { method: req.method ?? 'GET', path: req.url ?? '/', headers, body: body.again() };
          const outcome = await forward(poolFor(route.origin), request, res, requestId, (status) => opts.metrics.answered(stats, status, startedAt)).catch((err: Error) => {
            throw res.headersSent ? err : unreachable(route, err);
          });
          if (outcome.replay) {
            if (replays >= MAX_REPLAYS) {
              throw new HangarError('replay_loop', `machine ${route.id} asked for a replay after ${MAX_REPLAYS} replays`, {
                hint: 'a replay target must answer the request itself; check the fly-replay headers your machines send',
              });
            }
            headers.push('fly-replay-src', `instance=${route.id};app=${app}${outcome.replay.state ? `;state=${outcome.replay.state}` : ''}`);
            app = outcome.replay.app ?? app;
            current.release();
            picked = await targets.pick(app, outcome.replay.instance ? { force: outcome.replay.instance } : outcome.replay.elsewhere ? { exclude: route.id } : {});
            continue;
          }
          return;
        } finally {
          current.release();
        }
      }
    } finally {
      body.release();
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    if (guard.refuse(req, res)) return;
    const startedAt = performance.now();
    const requestId = nextRequestId();
    handle(req, res, requestId, startedAt).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const e = proxyAnswered(req, err, startedAt);
      res.writeHead(e.status, { 'content-type': 'application/json', 'fly-request-id': requestId });
      res.end(errorBody(e, requestId));
    });
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (guard.refuseUpgrade(req.socket)) return;
    const startedAt = performance.now();
    const requestId = nextRequestId();
    socket.on('error', () => socket.destroy());
    // From here the connection counts as the stream it becomes.
    holds.drop(socket);
    const refuse = (err: unknown) => {
      const e = proxyAnswered(req, err, startedAt);
      const body = errorBody(e, requestId);
      socket.end(`HTTP/1.1 ${e.status} ${statusText(e.status)}\r\ncontent-type: application/json\r\nfly-request-id: ${requestId}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    };
    let picked: Picked | undefined;
    (async () => {
      const scanned = scanRequest(req, requestId, true);
      const app = appOf(scanned.host);
      picked = await targets.pick(app, scanned);
      const { route, release } = picked;
      if (socket.destroyed) return release();
      forwardUpgrade(req, socket, head, route, scanned.headers, {
        failed: (err) => refuse(unreachable(route, err)),
        closed: release,
      });
      opts.metrics.answered(opts.metrics.statsFor(app, route.id), 101, startedAt);
    })().catch((err: unknown) => {
      picked?.release();
      refuse(err);
    });
  };

  const onClientError = (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable || !(err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code?.startsWith('HPE_'))) {
      socket.destroy();
      return;
    }
    const [status, e] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, new HangarError('bad_request', 'request headers too large', { hint: 'send under 16 KiB of headers (large cookies or tokens belong in the body)' })]
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, new HangarError('bad_request', 'request headers did not arrive in time', { hint: 'send the whole request head at once' })]
          : [400, new HangarError('bad_request', `malformed HTTP request (${err.code})`, { hint: 'send HTTP/1.1' })];
    const body = errorBody(e, '');
    socket.end(`HTTP/1.1 ${status} ${statusText(status)}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  };

  const servers: Server[] = [];
  let httpsServer: Server | undefined;
  const attach = (server: Server) => {
    if (server instanceof TlsServer) httpsServer = server;
    server.headersTimeout = opts.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS;
    // A long upload is not a slow client; the idle timeout catches one that stops sending.
    server.requestTimeout = 0;
    server.keepAliveTimeout = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    server.setTimeout(opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS, (socket) => socket.destroy());
    // Before node's own listener: an over-budget connection is marked (or, over HTTPS, where no
    // answer can be given before a handshake, closed) before it costs anything more.
    server.prependListener('connection', (socket: Socket) => {
      if (!guard.onConnection(socket) && server instanceof TlsServer) socket.destroy();
    });
    server.on('request', onRequest);
    server.on('upgrade', onUpgrade);
    server.on('clientError', onClientError);
    servers.push(server);
  };
  const server = createServer({ connectionsCheckingInterval: CHECK_INTERVAL_MS });
  attach(server);
  return {
    server,
    attach,
    close: async () => {
      for (const s of servers) s.closeAllConnections();
      await Promise.all(servers.map((s) => new Promise((resolve) => (s.listening ? s.close(resolve) : resolve(undefined)))));
      await Promise.all([...pools.values()].map((p) => p.close()));
    },
  };
}

/** How often node checks header timeouts; servers made elsewhere for attach() should use it too. */
export const CHECK_INTERVAL_MS = 1_000;

const NO_BODY = { again: () => null, release: () => undefined };

function portOf(server: Server): number | undefined {
  const address = server.address();
  return typeof address === 'object' && address ? address.port : undefined;
}

type Scanned = { host: string; force?: string; prefer?: string; headers: string[] };

/**
 * One pass over the raw request headers (node builds `req.headers` only when asked): what routing
 * needs, and the headers to send on as undici takes them (a flat list), minus hop-by-hop, plus
 * forwarding headers.
 */
function scanRequest(req: IncomingMessage, requestId: string, upgrade: boolean): Scanned {
  const raw = req.rawHeaders;
  const headers: string[] = [];
  const scanned: Scanned = { host: '', headers };
  let forwardedFor = '';
  let upgradeTo = 'websocket';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    switch (name) {
      case 'host':
        // Two Host headers: a front proxy and the machine could each believe a different one.
        if (scanned.host) {
          throw new HangarError('bad_request', 'the request has more than one Host header', { hint: 'send exactly one Host header' });
        }
        scanned.host = value;
        break;
      case 'x-forwarded-for':
        forwardedFor = forwardedFor ? `${forwardedFor}, ${value}` : value;
        break;
      case 'upgrade':
        upgradeTo = value;
        break;
      case 'fly-force-instance-id':
        scanned.force = value || undefined;
        headers.push(raw[i]!, value);
        break;
      case 'fly-prefer-instance-id':
        scanned.prefer = value || undefined;
        headers.push(raw[i]!, value);
        break;
      default:
        if (!HOP_BY_HOP.has(name) && !OWN.has(name)) headers.push(raw[i]!, value);
    }
  }
  const peer = req.socket.remoteAddress ?? '';
  const encrypted = (req.socket as TLSSocket).encrypted === true;
  const port = String(req.socket.localPort ?? '');
  headers.push(
    'host', scanned.host,
    'x-forwarded-for', forwardedFor ? `${forwardedFor}, ${peer}` : peer,
    'x-forwarded-proto', encrypted ? 'https' : 'http',
    'x-forwarded-host', scanned.host,
    'x-forwarded-port', port,
    'x-forwarded-ssl', encrypted ? 'on' : 'off',
    'fly-client-ip', peer,
    'fly-forwarded-port', port,
    'fly-request-id', requestId,
    'x-request-id', requestId,
  );
  if (upgrade) headers.push('connection', 'Upgrade', 'upgrade', upgradeTo);
  return scanned;
}

function unreachable(route: Route, err: Error): HangarError {
  return new HangarError('runtime_error', `machine ${route.id} (${route.ip}:${route.port}) did not answer: ${err.message}`, {
    hint: `check the machine's server: hangar machines logs ${route.id} --app ${route.app}`,
    details: { machine_id: route.id },
  });
}

function errorBody(e: HangarError, requestId: string): string {
  return JSON.stringify({ error: e.message, code: e.code, hint: e.hint, ...(requestId ? { request_id: requestId } : {}) });
}

/** Proxy answers are about reaching a machine, so they map differently from the API's. */
function statusFor(e: HangarError): number {
  switch (e.code) {
    case 'app_not_found':
    case 'route_not_found':
    case 'machine_not_found':
      return 404;
    case 'body_too_large':
      return 413;
    case 'bad_request':
      return 400;
    case 'replay_loop':
      return 508;
    case 'runtime_error':
      return 502; // the machine was picked but did not answer
    case 'internal':
      return 500;
    default:
      return 503; // nothing to serve it now: no machine started, none woke in time, all at their hard limit
  }
}

function statusText(status: number): string {
  return { 400: 'Bad Request', 404: 'Not Found', 408: 'Request Timeout', 413: 'Payload Too Large', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 508: 'Loop Detected' }[status] ?? 'Error';
}

/** The app label for a request the proxy answered itself; "" when the host names none. */
function appLabel(host: string | undefined, appOf: (host: string | undefined) => string): string {
  try {
    return appOf(host);
  } catch {
    return '';
  }
}

/** The app a Host header names: the label before the proxy's domain (`myapp.localhost:4380` → myapp). */
function resolveApp(host: string | undefined, domain: string, appForHostname?: (hostname: string) => string | undefined): string {
  const name = (host ?? '').replace(/:\d+$/, '').toLowerCase();
  const suffix = `.${domain}`;
  const app = name.endsWith(suffix) ? name.slice(0, -suffix.length) : appForHostname?.(name) ?? '';
  if (!app || app.includes('.')) {
    throw new HangarError('app_not_found', `no app for host ${JSON.stringify(host ?? '')}`, {
      hint: `address an app as <app>.${domain}, e.g. curl http://myapp.${domain}:<proxy port>/`,
    });
  }
  return app;
}
