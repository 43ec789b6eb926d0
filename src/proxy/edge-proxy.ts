import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Pool } from 'undici';
import { HangarError, isHangarError } from '../protocol/errors.ts';
import type { AppService } from '../machines/app-service.ts';
import type { MachineService } from '../machines/machine-service.ts';
import { parseReplay, replayableBody, MAX_REPLAYS } from './replay.ts';
import { Targets, type Target } from './targets.ts';

// The edge: `<app>.<domain>` goes to one of the app's machines on its service port, waking a
// stopped machine first; fly-force-instance-id / fly-prefer-instance-id pick one, and a machine's
// fly-replay answer sends the request elsewhere. Upstream connections are pooled per machine.

export const DEFAULT_PROXY_DOMAIN = 'localhost';

// RFC 9110 §7.6.1: these describe one connection and are not forwarded.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);

export type EdgeProxyOptions = { apps: AppService; machines: MachineService; domain: string };

export type EdgeProxy = {
  /** The plain-HTTP listener (not yet listening). */
  server: Server;
  /** Serves the proxy on another server too (the HTTPS listener); same routing, same pools. */
  attach(server: Server): void;
  close(): Promise<void>;
};

export function createEdgeProxy(opts: EdgeProxyOptions): EdgeProxy {
  const targets = new Targets(opts.machines);
  const pools = new Map<string, Pool>();
  const poolFor = (origin: string) => {
    let pool = pools.get(origin);
    if (!pool) pools.set(origin, (pool = new Pool(origin, { connections: 64, pipelining: 1 })));
    return pool;
  };

  const send = async (target: Target, app: string, method: string, path: string, headers: Record<string, string | string[]>, body: Buffer | Readable | null) => {
    const { machine, port } = target;
    try {
      return await poolFor(`http://${machine.privateIp}:${port}`).request({ path, method: method as 'GET', headers, body });
    } catch (err) {
      throw new HangarError('runtime_error', `machine ${machine.id} (${machine.privateIp}:${port}) did not answer: ${(err as Error).message}`, {
        hint: `check the machine's server: hangar machines logs ${machine.id} --app ${app}`,
        details: { machine_id: machine.id },
      });
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, requestId: string) => {
    let app = appOf(req.headers.host, opts.domain);
    opts.apps.get(app);
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    headers['x-forwarded-for'] = [req.headers['x-forwarded-for'], req.socket.remoteAddress].filter(Boolean).join(', ');
    headers['x-forwarded-proto'] = (req.socket as TLSSocket).encrypted ? 'https' : 'http';
    headers['x-forwarded-host'] = req.headers.host ?? '';
    headers['x-request-id'] = requestId;
    headers.host = req.headers.host ?? '';
    const body = await replayableBody(req);
    let target = await targets.pick(app, { force: header(req, 'fly-force-instance-id'), prefer: header(req, 'fly-prefer-instance-id') });
    for (let replays = 0; ; replays++) {
      const done = targets.track(target.machine.id);
      try {
        const upstream = await send(target, app, req.method ?? 'GET', req.url ?? '/', headers, body.again());
        const replay = parseReplay(upstream.headers['fly-replay']);
        if (replay) {
          await upstream.body.dump();
          if (replays >= MAX_REPLAYS) {
            throw new HangarError('bad_request', `machine ${target.machine.id} asked for a replay after ${MAX_REPLAYS} replays`, {
              hint: 'a replay target must answer the request itself; check the fly-replay headers your machines send',
            });
          }
          headers['fly-replay-src'] = `instance=${target.machine.id};app=${app}${replay.state ? `;state=${replay.state}` : ''}`;
          const from = target.machine.id;
          app = replay.app ?? app;
          if (replay.app) opts.apps.get(app);
          target = await targets.pick(app, replay.instance ? { force: replay.instance } : replay.elsewhere ? { exclude: from } : {});
          continue;
        }
        const out: Record<string, string | string[]> = { 'fly-request-id': requestId };
        for (const [k, v] of Object.entries(upstream.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
        res.writeHead(upstream.statusCode, out);
        res.flushHeaders();
        await pipeline(upstream.body, res);
        return;
      } finally {
        done();
      }
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const requestId = randomBytes(8).toString('hex');
    handle(req, res, requestId).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const e = isHangarError(err) ? err : new HangarError('internal', 'proxy error', { hint: 'retry; if it persists, check the daemon log' });
      res.writeHead(statusFor(e), { 'content-type': 'application/json', 'fly-request-id': requestId });
      res.end(JSON.stringify({ error: e.message, code: e.code, hint: e.hint, request_id: requestId }));
    });
  };
  const servers: Server[] = [];
  const attach = (server: Server) => {
    server.on('request', onRequest);
    servers.push(server);
  };
  const server = createServer();
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

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return (Array.isArray(v) ? v[0] : v) || undefined;
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
      return 508; // a replay loop
    case 'runtime_error':
      return 502; // the machine was picked but did not answer
    case 'internal':
      return 500;
    default:
      return 503; // nothing to serve it now: no machine started, or none woke in time
  }
}

/** The app a Host header names: the label before the proxy's domain (`myapp.localhost:4380` → myapp). */
function appOf(host: string | undefined, domain: string): string {
  const name = (host ?? '').replace(/:\d+$/, '').toLowerCase();
  const suffix = `.${domain}`;
  const app = name.endsWith(suffix) ? name.slice(0, -suffix.length) : '';
  if (!app || app.includes('.')) {
    throw new HangarError('app_not_found', `no app for host ${JSON.stringify(host ?? '')}`, {
      hint: `address an app as <app>.${domain}, e.g. curl http://myapp.${domain}:<proxy port>/`,
    });
  }
  return app;
}
