import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Pool } from 'undici';
import { HangarError, isHangarError } from '../protocol/errors.ts';
import type { AppService } from '../machines/app-service.ts';
import type { MachineService } from '../machines/machine-service.ts';
import { Targets } from './targets.ts';

// The edge: `<app>.<domain>` goes to one of the app's machines on its service port, waking a
// stopped machine first. Bodies stream both ways; upstream connections are pooled per machine.

export const DEFAULT_PROXY_DOMAIN = 'localhost';

// RFC 9110 §7.6.1: these describe one connection and are not forwarded.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);

export type EdgeProxyOptions = { apps: AppService; machines: MachineService; domain: string };

export function createEdgeProxy(opts: EdgeProxyOptions): Server & { closePools(): Promise<void> } {
  const targets = new Targets(opts.machines);
  const pools = new Map<string, Pool>();
  const poolFor = (origin: string) => {
    let pool = pools.get(origin);
    if (!pool) pools.set(origin, (pool = new Pool(origin, { connections: 64, pipelining: 1 })));
    return pool;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, requestId: string) => {
    const app = appOf(req.headers.host, opts.domain);
    opts.apps.get(app);
    const { machine, port } = await targets.pick(app);
    const done = targets.track(machine.id);
    try {
      const headers: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
      const forwardedFor = req.headers['x-forwarded-for'];
      headers['x-forwarded-for'] = [forwardedFor, req.socket.remoteAddress].filter(Boolean).join(', ');
      headers['x-forwarded-proto'] = 'http';
      headers['x-forwarded-host'] = req.headers.host ?? '';
      headers['x-request-id'] = requestId;
      headers.host = req.headers.host ?? '';
      let upstream;
      try {
        upstream = await poolFor(`http://${machine.privateIp}:${port}`).request({
          path: req.url ?? '/',
          method: req.method as 'GET',
          headers,
          body: req.method === 'GET' || req.method === 'HEAD' ? null : req,
        });
      } catch (err) {
        throw new HangarError('runtime_error', `machine ${machine.id} (${machine.privateIp}:${port}) did not answer: ${(err as Error).message}`, {
          hint: `check the machine's server: hangar machines logs ${machine.id} --app ${app}`,
          details: { machine_id: machine.id },
        });
      }
      const out: Record<string, string | string[]> = { 'fly-request-id': requestId };
      for (const [k, v] of Object.entries(upstream.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      res.writeHead(upstream.statusCode, out);
      res.flushHeaders();
      await pipeline(upstream.body, res);
    } finally {
      done();
    }
  };

  const server = createServer((req, res) => {
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
  });
  return Object.assign(server, {
    closePools: async () => {
      await Promise.all([...pools.values()].map((p) => p.close()));
    },
  });
}

/** Proxy answers are about reaching a machine, so they map differently from the API's. */
function statusFor(e: HangarError): number {
  switch (e.code) {
    case 'app_not_found':
    case 'route_not_found':
      return 404;
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
