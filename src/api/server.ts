import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import websocket from '@fastify/websocket';
import type { WebSocket } from 'ws';
import { HangarError } from '../protocol/errors.ts';
import { DaemonAddressesSchema } from '../protocol/daemon-addresses.ts';
import { credentialOf, type TokenAuthority } from '../tokens/token-authority.ts';
import { Access, type MachineLookup, type Need, type RequestOrigin } from './access.ts';
import { OriginRelay } from './origin-relay.ts';
import { errorBody, toHangarError } from './errors.ts';
import { buildOpenApi } from './openapi.ts';
import { buildLlmsTxt } from './llms-txt.ts';
import { parseJsonBody } from './json-body.ts';
import { HANDLED, route, type RouteDef } from './route.ts';
import type { ApiServices } from './services.ts';
import type { Caller } from '../machines/machine-service.ts';
import { appRoutes } from './routes/apps.ts';
import { machineRoutes } from './routes/machines.ts';
import { machineActionRoutes } from './routes/machine-actions.ts';
import { machineAdminRoutes } from './routes/machine-admin.ts';
import { logRoutes } from './routes/logs.ts';
import { egressRoutes } from './routes/egress.ts';
import { imageRoutes } from './routes/images.ts';
import { fileRoutes } from './routes/files.ts';
import { execStreamRoutes } from './routes/exec-stream.ts';
import { certificateRoutes } from './routes/certificates.ts';
import { checkpointRoutes } from './routes/checkpoints.ts';
import { commitRoutes } from './routes/commit.ts';
import { volumeRoutes } from './routes/volumes.ts';
import { sessionRoutes } from './routes/sessions.ts';
import { machineMetricsRoutes } from './routes/machine-metrics.ts';
import { usageRoutes } from './routes/usage.ts';
import { fileWatchRoutes } from './routes/files-watch.ts';
import { tokenRoutes } from './routes/tokens.ts';
import { tokenizerRoutes } from './routes/tokenizer.ts';
import { secretRoutes } from './routes/secrets.ts';
import { registerMcpEndpoint } from '../mcp/http-endpoint.ts';
import { toolSummaries } from '../mcp/mcp-server.ts';

// The REST server: parses HTTP into service calls and is the one place errors become HTTP.

export const BODY_LIMIT_BYTES = 1024 * 1024;

export type ApiServerOptions = {
  services: ApiServices;
  tokens: TokenAuthority;
  /** Where a request came from when the daemon can tell (a machine, through its gateway). */
  originOf?: (req: IncomingMessage) => RequestOrigin | undefined;
  logger?: boolean | object;
};

const systemRoutes = (all: () => RouteDef[]) => [
  route({
    method: 'GET', path: '/health', tag: 'System', summary: 'Liveness (no auth)', public: true,
    handler: () => ({ ok: true }),
  }),
  route({
    method: 'GET', path: '/openapi.json', tag: 'System', summary: 'This API as OpenAPI 3.1 (no auth)', public: true,
    handler: ({ headers }) => buildOpenApi(all(), `http://${headers.host ?? '127.0.0.1:4280'}`),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/addresses', tag: 'System', summary: "Where this daemon serves: the API, the edge proxy (HTTP, HTTPS) and apps' domain",
    response: DaemonAddressesSchema,
    handler: ({ services }) => services.addresses,
  }),
  route({
    access: { action: 'read', everyApp: true },
    method: 'GET', path: '/metrics', tag: 'System', summary: 'Prometheus metrics: the edge proxy per app and machine (requests, statuses, latency, wakes, autostops), each started machine\'s resource use (hangar_machine_*: CPU, memory, processes, disk, network) and the daemon',
    produces: 'text/plain',
    handler: async ({ reply, services }) => {
      void reply.type(services.metrics.contentType).send(await services.metrics.metrics());
      return HANDLED;
    },
  }),
  route({
    method: 'GET', path: '/llms.txt', tag: 'System', summary: 'This API and the MCP tools, described for a model to read (no auth)', public: true,
    produces: 'text/plain',
    handler: ({ reply, services }) => {
      void reply.type('text/plain; charset=utf-8').send(buildLlmsTxt(all(), toolSummaries(services.addresses), services.addresses));
      return HANDLED;
    },
  }),
];

export function allRoutes(): RouteDef[] {
  const routes: RouteDef[] = [...appRoutes, ...machineRoutes, ...machineActionRoutes, ...execStreamRoutes, ...machineAdminRoutes, ...logRoutes, ...egressRoutes, ...imageRoutes, ...fileRoutes, ...certificateRoutes, ...checkpointRoutes, ...commitRoutes, ...volumeRoutes, ...sessionRoutes, ...machineMetricsRoutes, ...fileWatchRoutes, ...tokenRoutes, ...tokenizerRoutes, ...secretRoutes, ...usageRoutes];
  return [...systemRoutes(() => routes), ...routes];
}

export function createApiServer(opts: ApiServerOptions): FastifyInstance {
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: BODY_LIMIT_BYTES,
    genReqId: () => 'req_' + randomBytes(8).toString('hex'),
    requestTimeout: 0,
  });

  // Fly clients POST …/start and …/stop with no body, sometimes with a JSON content type.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, parseJsonBody(String(body)));
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  // File uploads stream straight through to their handler, unbuffered and not size-limited.
  app.addContentTypeParser(['application/octet-stream', 'application/x-tar'], (_req, payload, done) => done(null, payload));

  void app.register(websocket);
  const relay = new OriginRelay();
  registerMcpEndpoint(app, opts.services.addresses, relay);

  const lookup = machineLookup(opts.services);
  // Authenticates here; what the token's caveats allow is checked per route (checkAccess) once the body is parsed.
  app.decorateRequest('access', null);
  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
    const def = (req.routeOptions.config as { def?: RouteDef } | undefined)?.def;
    if (def?.public) return;
    const grant = await opts.tokens.authenticate(credentialOf(req.headers.authorization));
    const origin = relay.originOf(req.raw) ?? opts.originOf?.(req.raw) ?? {};
    const access = new Access(grant, origin, lookup);
    (req as RequestWithAccess).access = access;
    // Validity and origin bind every use of the token, /mcp's included.
    if (!def) access.check({ action: 'read', anyToken: true });
  });

  app.setErrorHandler((err, req, reply) => {
    const hangarError = toHangarError(err);
    if (hangarError.code === 'internal') req.log.error({ err }, 'unhandled error');
    const { status, body } = errorBody(hangarError, req.id, req.params as { app_name?: string; machine_id?: string });
    const retryAfter = hangarError.details?.retry_after_seconds;
    if (typeof retryAfter === 'number') void reply.header('retry-after', String(retryAfter));
    void reply.status(status).send(body);
  });

  app.setNotFoundHandler((req, reply) => {
    const err = new HangarError('route_not_found', `no route ${req.method} ${req.url.split('?')[0]}`, {
      hint: 'the API is described at GET /openapi.json',
    });
    const { status, body } = errorBody(err, req.id);
    void reply.status(status).send(body);
  });

  // Routes go in a plugin so they are added after @fastify/websocket has loaded (it must see wsHandler).
  const routes = allRoutes();
  const undeclared = routes.filter((d) => !d.public && !d.access).map((d) => `${d.method} ${d.path}`);
  if (undeclared.length) throw new Error(`routes without access declared: ${undeclared.join(', ')}`);
  void app.register(async (scope) => {
    for (const def of routes) addRoute(scope, def, opts.services);
  });
  return app;
}

type RequestWithAccess = FastifyRequest & { access: Access };

function machineLookup(services: ApiServices): MachineLookup {
  return {
    find: (app, idOrName) => {
      try {
        return services.machines.get(app, idOrName);
      } catch {
        return undefined;
      }
    },
    privateIp: (id) => services.machines.byId(id)?.privateIp || undefined,
  };
}

/** What a call of `def` needs of its token, from its path and parsed body. */
async function needOf(def: RouteDef, access: Access, services: ApiServices, params: unknown, body: unknown): Promise<Need> {
  const a = def.access!;
  let command: string[] | null | undefined;
  if (a.command && access.limitsCommands) {
    command = await Promise.resolve(a.command({ body: body as never, params: params as never, services })).then((c) => c ?? null, () => null);
  }
  const p = (params ?? {}) as { app_name?: string; machine_id?: string };
  const app = a.appInBody ? (body as { app_name?: string } | undefined)?.app_name : p.app_name;
  return {
    action: a.action,
    ...(app !== undefined ? { app } : {}),
    ...(p.machine_id !== undefined ? { machine: p.machine_id } : {}),
    ...(command !== undefined ? { command } : {}),
    ...(a.everyApp ? { everyApp: true } : {}),
    ...(a.anyToken ? { anyToken: true } : {}),
  };
}

/** The limits caveats of the request's token, which limits.ts applies on top of the app's (a public route has no access). */
function callerOf(access: Access | null): Caller {
  return access?.grant.kind === 'token' && access.grant.budgets.length ? { budgets: access.grant.budgets } : {};
}

/** The route's access, checked against the request's token; public routes have none. */
async function checkAccess(def: RouteDef, req: FastifyRequest, services: ApiServices, params: unknown, body: unknown): Promise<Access> {
  const access = (req as RequestWithAccess).access;
  if (!def.public) access.check(await needOf(def, access, services, params, body));
  return access;
}

function addRoute(app: FastifyInstance, def: RouteDef, services: ApiServices): void {
  app.route({
    method: def.method,
    url: def.path.replace(/\{(\w+)\}/g, ':$1'),
    config: { def },
    ...(def.websocket ? { wsHandler: websocketHandler(def, services) } : {}),
    handler: async (req, reply) => {
      const abort = new AbortController();
      reply.raw.on('close', () => abort.abort());
      const params = def.params ? def.params.parse(req.params) : undefined;
      const query = def.query ? def.query.parse(req.query) : undefined;
      const body = parseBody(def, req);
      const access = await checkAccess(def, req, services, params, body);
      const release = useMachine(def, req, services);
      if (release) reply.raw.once('close', release);
      const result = await def.handler({
        params,
        query,
        body,
        access,
        headers: req.headers,
        requestId: req.id,
        signal: abort.signal,
        services,
        caller: callerOf(access),
        req,
        reply,
      });
      if (result === HANDLED) return reply;
      reply.status(def.status ?? 200);
      return result === undefined ? reply.send() : reply.send(result);
    },
  });
}

/** Runs a route's websocket side; a failure is one error message, then close code 1008. */
function websocketHandler(def: RouteDef, services: ApiServices) {
  return async (socket: WebSocket, req: FastifyRequest) => {
    const abort = new AbortController();
    socket.on('close', () => abort.abort());
    let release: (() => void) | undefined;
    try {
      const params = def.params ? def.params.parse(req.params) : undefined;
      const access = await checkAccess(def, req, services, params, undefined);
      release = useMachine(def, req, services);
      if (release) socket.once('close', release);
      await def.websocket!(socket, {
        params,
        query: def.query ? def.query.parse(req.query) : undefined,
        body: undefined,
        access,
        headers: req.headers,
        requestId: req.id,
        signal: abort.signal,
        services,
        caller: callerOf(access),
        req,
        reply: undefined as never,
      });
    } catch (err) {
      const hangarError = toHangarError(err);
      if (hangarError.code === 'internal') req.log.error({ err }, 'unhandled websocket error');
      const { body } = errorBody(hangarError, req.id, req.params as { app_name?: string; machine_id?: string });
      if (socket.readyState === socket.OPEN) {
        socket.send(JSON.stringify({ type: 'error', ...body }));
        socket.close(1008, hangarError.code);
      }
    }
  };
}

/**
 * Counts a call on a machine as its activity: held until the response (or socket) closes, so a
 * long exec, console, transfer or log follow keeps the machine from being stopped as idle.
 */
function useMachine(def: RouteDef, req: FastifyRequest, services: ApiServices): (() => void) | undefined {
  const { app_name: app, machine_id: idOrName } = req.params as { app_name?: string; machine_id?: string };
  if (!app || !idOrName || def.observes) return undefined;
  let id: string;
  try {
    id = services.machines.get(app, idOrName).id;
  } catch {
    return undefined; // the handler says what is wrong with it
  }
  return services.activity.hold(id);
}

function parseBody(def: RouteDef, req: FastifyRequest): unknown {
  if (!def.body) return undefined;
  if (req.body === undefined && def.bodyOptional) return undefined;
  if (req.body === undefined) {
    throw new HangarError('invalid_json', 'this request needs a JSON body', { hint: 'send a JSON object with Content-Type: application/json' });
  }
  return def.body.parse(req.body);
}
