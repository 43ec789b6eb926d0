import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { HangarClient } from '../sdk/index.ts';
import { createMcpServer } from './mcp-server.ts';
import type { DaemonAddresses } from '../protocol/daemon-addresses.ts';
import { credentialOf } from '../tokens/token-authority.ts';
import type { Access, RequestOrigin } from '../api/access.ts';
import { ORIGIN_RELAY_HEADER, type OriginRelay } from '../api/origin-relay.ts';

// MCP over Streamable HTTP at /mcp on the API port. The API's onRequest hook has already checked
// the token (Bearer or FlyV1). Each session gets its own MCP server whose HangarClient calls this
// daemon's loopback URL with the caller's token, so whatever that token may do over REST it may do
// here, and nothing more; a caller inside a machine keeps that origin (api/origin-relay.ts).
//
// Sessions (not the SDK's stateless mode) because a cancellation arrives as a separate POST
// that must reach the handler still running the call, which is what kills a long exec.
// A session ends on DELETE, when its transport closes, after IDLE_MS without requests,
// or when the server shuts down.

const IDLE_MS = 30 * 60_000;
const SWEEP_MS = 60_000;

type Session = { transport: StreamableHTTPServerTransport; tokenDigest: Buffer; open: number; lastSeenMs: number };

const digest = (s: string) => createHash('sha256').update(s).digest();

function bearerOf(req: FastifyRequest): string {
  return credentialOf(req.headers.authorization);
}

/** This server's own address as a client reaches it: a wildcard bind is reached on loopback. */
function loopbackUrl(app: FastifyInstance): string {
  const { address, family, port } = app.server.address() as AddressInfo;
  const host = address === '0.0.0.0' ? '127.0.0.1' : address === '::' ? '::1' : address;
  return `http://${family === 'IPv6' || host.includes(':') ? `[${host}]` : host}:${port}`;
}

function rpcError(reply: FastifyReply, status: number, code: number, message: string): FastifyReply {
  return reply.status(status).send({ jsonrpc: '2.0', error: { code, message }, id: null });
}

export function registerMcpEndpoint(app: FastifyInstance, addresses: DaemonAddresses, relay: OriginRelay): void {
  const sessions = new Map<string, Session>();

  async function open(token: string, origin: RequestOrigin): Promise<Session> {
    const relayKey = origin.machineIp ? relay.issue(origin) : undefined;
    const relayFetch: typeof fetch = (input, init) => fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), [ORIGIN_RELAY_HEADER]: relayKey! } });
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => void sessions.set(id, session),
    });
    const session: Session = { transport, tokenDigest: digest(token), open: 0, lastSeenMs: Date.now() };
    // Set before connect(): the MCP server chains its own close handling after this one.
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
      if (relayKey) relay.release(relayKey);
    };
    const client = new HangarClient({ baseUrl: loopbackUrl(app), token, ...(relayKey ? { fetch: relayFetch } : {}) });
    await createMcpServer(client, addresses).connect(transport);
    return session;
  }

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const s of sessions.values()) if (s.open === 0 && now - s.lastSeenMs > IDLE_MS) void s.transport.close().catch(() => undefined);
  }, SWEEP_MS);
  sweep.unref();

  // Before the server waits for connections to drain: open event streams would hold it forever.
  app.addHook('preClose', async () => {
    clearInterval(sweep);
    await Promise.all([...sessions.values()].map((s) => s.transport.close()));
  });

  app.route({
    method: ['POST', 'GET', 'DELETE'],
    url: '/mcp',
    handler: async (req, reply) => {
      const token = bearerOf(req);
      const sessionId = req.headers['mcp-session-id'];
      let session: Session;
      if (typeof sessionId === 'string') {
        const found = sessions.get(sessionId);
        // A session is bound to the token that opened it; another token cannot even see it exists.
        if (!found || !timingSafeEqual(found.tokenDigest, digest(token))) return rpcError(reply, 404, -32001, 'Session not found');
        session = found;
      } else if (req.method === 'POST' && isInitializeRequest(req.body)) {
        session = await open(token, (req as FastifyRequest & { access: Access }).access.origin);
      } else {
        return rpcError(reply, 400, -32000, 'Bad Request: send an initialize request first, then the Mcp-Session-Id it returns');
      }
      reply.hijack();
      session.open++;
      reply.raw.once('close', () => {
        session.open--;
        session.lastSeenMs = Date.now();
      });
      try {
        await session.transport.handleRequest(req.raw, reply.raw, req.body);
      } catch (err) {
        req.log.error({ err }, 'mcp request failed');
        if (!reply.raw.headersSent) reply.raw.writeHead(500, { 'content-type': 'application/json' });
        reply.raw.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null }));
      }
      // An initialize that did not produce a session leaves nothing behind.
      if (!session.transport.sessionId) await session.transport.close();
      return reply;
    },
  });
}
