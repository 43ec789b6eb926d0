import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import { createSecureContext, getCACertificates, TLSSocket, type SecureContext } from 'node:tls';
import type { Socket } from 'node:net';
import { Counter, type Registry } from 'prom-client';
import { HangarError } from '../protocol/errors.ts';
import type { LeafIssuer } from '../proxy/tls/leaf-issuer.ts';
import type { AppSecrets, UsableSecret } from './app-secrets.ts';
import type { DestinationPolicy } from './destinations.ts';
import type { RequestSource } from './secret-rules.ts';
import { forwardedHeaders, relayUpstream, sendProxyError } from './proxy-relay.ts';

// The egress proxy of transparent mode. A machine's app DNS answers its gateway for every name an
// app secret allows, so `curl https://api.github.com` lands here (port 443, or 80 for http://).
// Over TLS the machine is shown a certificate for the name it asked (SNI) from the egress CA,
// which its CA store trusts (machine-trust.ts); only names its own app has a secret for get one.
// The request's headers then have each placeholder of the app's secrets for that host replaced
// by the value (Basic credentials too), the inject header set where the machine sent none, and
// the request goes on over HTTPS to the real host, resolved through the daemon's upstream DNS and
// refused if private, with its certificate verified. A placeholder of another app, or of a secret
// for other hosts, stays a placeholder; a value the host echoes in its response headers goes back
// as the placeholder (a body is passed as it is: name only hosts that do not echo credentials).
// Nothing here logs; errors name rules, never values.

const UPSTREAM_TIMEOUT_MS = 30_000;
const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * A connection with nothing sent either way for this long is closed. Node times request heads
 * only on servers that listen themselves, and these are handed their sockets; the gateways'
 * connection budget bounds how many a machine holds meanwhile.
 */
const IDLE_TIMEOUT_MS = 120_000;

export type EgressProxyOptions = {
  secrets: AppSecrets;
  issuer: LeafIssuer;
  destinations: DestinationPolicy;
  /** PEM CA certificates trusted for upstreams besides the system's (tests' own CA). */
  extraCaPem?: string[];
  /** The machine with this private address (spoofing is stopped at its veth). */
  sourceOf: (address: string) => RequestSource | undefined;
  /** Where hangar_egress_requests_total{app,result} goes. */
  registry?: Registry;
};

export class EgressProxy {
  readonly #opts: EgressProxyOptions;
  readonly #http: Server;
  readonly #agent: Agent;
  readonly #requests: Counter<'app' | 'result'>;
  /** The machine each connection (plain, or TLS over it) came from. */
  readonly #sources = new WeakMap<Socket, RequestSource>();

  constructor(opts: EgressProxyOptions) {
    this.#opts = opts;
    // Node's own roots, the host's (an operator's corporate CA is often only there), and the extra
    // ones, parsed once: a context made per request costs ~15 ms of parsing some 700 certificates.
    const ca = [...new Set([...getCACertificates('bundled'), ...getCACertificates('system'), ...(opts.extraCaPem ?? [])])];
    // Connections to a host are kept and reused: they carry no credential of their own.
    this.#agent = new Agent({ keepAlive: true, maxFreeSockets: 4, timeout: UPSTREAM_TIMEOUT_MS, secureContext: createSecureContext({ ca }) });
    this.#requests = new Counter({
      name: 'hangar_egress_requests_total',
      help: "Requests through the gateways' egress proxy (app secrets) by app and result: ok, or the refusal code",
      labelNames: ['app', 'result'],
      registers: opts.registry ? [opts.registry] : [],
    });
    this.#http = createServer({ requestTimeout: 0, headersTimeout: 10_000, keepAliveTimeout: 5_000 });
    this.#http.on('request', (req, res) => {
      const source = this.#sources.get(req.socket);
      this.#handle(req, res, source).then(
        () => this.#requests.inc({ app: source?.app ?? '', result: 'ok' }),
        (err: unknown) => this.#requests.inc({ app: source?.app ?? '', result: sendProxyError(res, err, 'egress proxy') }),
      );
    });
    // No tunnels and no upgrades: the proxy must see each request the secret goes into.
    this.#http.on('connect', (_req, socket: Socket) => socket.destroy());
    this.#http.on('upgrade', (_req, socket: Socket) => socket.destroy());
  }

  /** A connection to a gateway's port 80. */
  plain(socket: Socket): void {
    const source = this.#opts.sourceOf(socket.remoteAddress ?? '');
    if (!source) return void socket.destroy();
    socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());
    this.#sources.set(socket, source);
    this.#http.emit('connection', socket);
  }

  /** A connection to a gateway's port 443: TLS with a leaf for the SNI name, if the machine's app has a secret for it. */
  tls(socket: Socket): void {
    const source = this.#opts.sourceOf(socket.remoteAddress ?? '');
    if (!source) return void socket.destroy();
    const timer = setTimeout(() => socket.destroy(), HANDSHAKE_TIMEOUT_MS).unref();
    socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());
    const tls = new TLSSocket(socket, {
      isServer: true,
      ALPNProtocols: ['http/1.1'],
      SNICallback: (name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => {
        if (!this.#opts.secrets.allowsHost(source.app, name)) return cb(new Error('no secret of this app allows this name'));
        this.#opts.issuer.certificateFor(name.toLowerCase()).then((issued) => cb(null, issued.context), (err: Error) => cb(err));
      },
    });
    tls.once('secure', () => clearTimeout(timer));
    tls.on('error', () => tls.destroy());
    this.#sources.set(tls, source);
    this.#http.emit('connection', tls);
  }

  close(): void {
    this.#http.closeAllConnections();
    this.#agent.destroy();
  }

  async #handle(req: IncomingMessage, res: ServerResponse, source: RequestSource | undefined): Promise<void> {
    if (!source) throw new HangarError('host_not_allowed', 'the egress proxy serves only machines', { hint: 'send requests from a machine of an app with secrets' });
    const sni = req.socket instanceof TLSSocket ? (req.socket as TLSSocket & { servername?: string | false }).servername : undefined;
    const hostHeader = (req.headers.host ?? '').toLowerCase();
    const hostname = hostHeader.replace(/:\d+$/, '').replace(/\.$/, '');
    if (typeof sni === 'string' && hostname !== sni.toLowerCase()) {
      throw new HangarError('host_not_allowed', `the request's Host (${hostname || 'none'}) is not the name its TLS connection asked for (${sni})`, {
        hint: 'send Host equal to the name connected to',
      });
    }
    // An absolute URL in the request line names a host of its own, which a server behind a shared
    // front (a CDN) may route by: only paths go on.
    if (!req.url?.startsWith('/')) {
      throw new HangarError('bad_request', 'the egress proxy takes requests for paths (GET /path), not absolute URLs', { hint: 'send the request to the host itself, not through an HTTP proxy setting' });
    }
    if (!hostname || !this.#opts.secrets.allowsHost(source.app, hostname)) {
      throw new HangarError('host_not_allowed', `no secret of app ${source.app} names ${hostname || 'this host'}`, {
        hint: `add the host to a secret's hosts (POST /v1/apps/${source.app}/secrets), or reach it directly`,
      });
    }
    const usable = this.#opts.secrets.usableFor(source.app, hostname);
    const headers = withSecrets(forwardedHeaders(req), usable);
    const destination = await this.#opts.destinations.resolve(hostname);
    await this.#forward(req, res, hostname, destination.address, headers, usable);
  }

  async #forward(req: IncomingMessage, res: ServerResponse, hostname: string, address: string, headers: OutgoingHttpHeaders, usable: UsableSecret[]): Promise<void> {
    const upstream = httpsRequest({
      host: address,
      port: 443,
      servername: hostname,
      method: req.method,
      path: req.url,
      headers: { host: hostname, ...headers },
      agent: this.#agent,
      timeout: UPSTREAM_TIMEOUT_MS,
    });
    const relayed = relayUpstream(upstream, res, {
      host: hostname,
      what: 'the egress proxy connects to it on port 443 and verifies its certificate',
      timeoutMs: UPSTREAM_TIMEOUT_MS,
      // A host that echoes a request's headers back must not hand the machine the value.
      rewrite: (text) => usable.reduce((t, s) => t.split(s.value).join(s.placeholder), text),
    });
    req.pipe(upstream);
    await relayed;
  }
}

/**
 * The headers with each secret's placeholder replaced by its value, wherever it appears (inside
 * Basic credentials too), and each inject header set where the request has none.
 */
export function withSecrets(headers: OutgoingHttpHeaders, secrets: UsableSecret[]): OutgoingHttpHeaders {
  if (secrets.length === 0) return headers;
  const swap = (text: string): string => {
    let out = text;
    for (const s of secrets) out = out.split(s.placeholder).join(s.value);
    const basic = /^(basic\s+)([A-Za-z0-9+/=]+)$/i.exec(out);
    if (basic) {
      const decoded = Buffer.from(basic[2]!, 'base64').toString('utf8');
      const swapped = secrets.reduce((t, s) => t.split(s.placeholder).join(s.value), decoded);
      if (swapped !== decoded) out = basic[1] + Buffer.from(swapped, 'utf8').toString('base64');
    }
    return out;
  };
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value.map(swap) : typeof value === 'string' ? swap(value) : value;
  }
  for (const s of secrets) {
    const name = s.inject?.header.toLowerCase();
    if (name && out[name] === undefined) out[name] = s.inject!.format.replace('%s', s.value);
  }
  return out;
}

