import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type Socket } from 'node:net';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { Counter, type Registry } from 'prom-client';
import { HangarError } from '../protocol/errors.ts';
import type { DestinationPolicy } from './destinations.ts';
import type { SealingKeys } from './sealed-box.ts';
import { forwardedHeaders, relayUpstream, sendProxyError } from './proxy-relay.ts';
import { authorize, checkHost, injection, parseOpenedSecret, type Injection, type ProcessorParams, type RequestSource } from './secret-rules.ts';

// Fly's tokenizer protocol (its README and tokenizer.go): the client uses this as a plain HTTP
// proxy and asks for http://host/path; each Proxy-Tokenizer header carries a sealed secret
// (base64, optionally followed by "; {json params}"), Proxy-Authorization proves the client may
// use it. The proxy opens each secret, checks its auth rule and allowed hosts, injects the
// credential, and sends the request on over TLS: port 80 (or none) becomes 443, another port
// stays, and http://host:443 is refused, all as Fly does. The upstream's certificate is verified
// against the system's roots (plus an operator's CA, for tests). CONNECT is refused: a tunnel
// would hide the request the secret belongs in.
//
// Nothing here logs, and no answer contains a secret: errors name only which rule failed.

/** Bodies kept in memory to be signed (inject_hmac_processor without a msg param). */
const MAX_SIGNED_BODY_BYTES = 8 * 2 ** 20;
const UPSTREAM_TIMEOUT_MS = 30_000;

export type TokenizerProxyOptions = {
  keys: SealingKeys;
  destinations: DestinationPolicy;
  /** PEM CA certificates trusted for upstreams besides the system's (tests' own CA). */
  extraCaPem?: string[];
  /** The machine with this private address (a gateway connection's peer; spoofing is stopped at its veth). */
  sourceOf: (address: string) => RequestSource | undefined;
  /** Where hangar_tokenizer_requests_total{app,result} goes (the operator's audit of secret use). */
  registry?: Registry;
};

export class TokenizerProxy {
  /** Serves connections handed to it (gateway listeners) or listens itself (listen()). */
  readonly server: Server;
  readonly #opts: TokenizerProxyOptions;
  /** Node's roots plus the operator's CAs, parsed once: a context per request would parse them all again. */
  readonly #trust: SecureContext | undefined;
  readonly #requests: Counter<'app' | 'result'>;

  constructor(opts: TokenizerProxyOptions) {
    this.#opts = opts;
    this.#requests = new Counter({
      name: 'hangar_tokenizer_requests_total',
      help: 'Requests through the tokenizer proxy by the app of the machine that sent them ("" from the host) and result: ok (forwarded with the secret) or the refusal code',
      labelNames: ['app', 'result'],
      registers: opts.registry ? [opts.registry] : [],
    });
    this.#trust = opts.extraCaPem?.length ? createSecureContext({ ca: [...rootCertificates, ...opts.extraCaPem] }) : undefined;
    this.server = createServer({ requestTimeout: 0, headersTimeout: 10_000, keepAliveTimeout: 5_000 });
    this.server.on('request', (req, res) => {
      const app = opts.sourceOf(req.socket.remoteAddress ?? '')?.app ?? '';
      this.#handle(req, res).then(
        () => this.#requests.inc({ app, result: 'ok' }),
        (err: unknown) => this.#requests.inc({ app, result: sendProxyError(res, err, 'tokenizer', (status) => (status === 407 ? { 'proxy-authenticate': 'Bearer' } : {})) }),
      );
    });
    this.server.on('connect', (_req: IncomingMessage, socket: Socket) => {
      const body = JSON.stringify({ error: 'the tokenizer does not tunnel (CONNECT)', code: 'bad_request', hint: 'send the request as plain http://host/path through the proxy; it connects to the host over HTTPS itself' });
      socket.end(`HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = targetOf(req);
    const sealed = req.headersDistinct['proxy-tokenizer'] ?? [];
    if (sealed.length === 0) {
      throw new HangarError('secret_invalid', 'the request carries no Proxy-Tokenizer header', {
        hint: 'send Proxy-Tokenizer: <base64 sealed secret> (seal it with POST /v1/tokenizer/seal)',
      });
    }
    const injections = sealed.map((header) => this.#open(header, req, target.host));
    const body = injections.some((i) => i.needsBody) ? await readBody(req) : undefined;
    const headers = forwardedHeaders(req);
    for (const i of injections) {
      const { name, value } = i.header(body);
      headers[name] = value;
    }
    if (body) headers['content-length'] = String(body.length);
    const destination = await this.#opts.destinations.resolve(target.hostname);
    await this.#forward(req, res, target, destination.address, headers, body);
  }

  /** Opens one Proxy-Tokenizer header and checks it allows this request. */
  #open(header: string, req: IncomingMessage, host: string): Injection {
    const semi = header.indexOf(';');
    const b64 = (semi < 0 ? header : header.slice(0, semi)).trim();
    const paramJson = semi < 0 ? '' : header.slice(semi + 1).trim();
    let params: ProcessorParams = {};
    if (paramJson) {
      try {
        params = JSON.parse(paramJson) as ProcessorParams;
      } catch {
        throw new HangarError('secret_invalid', 'the Proxy-Tokenizer parameters after ";" are not JSON', { hint: 'send "<sealed>; {\\"dst\\": \\"X-Header\\"}" or the sealed secret alone' });
      }
      if (typeof params !== 'object' || params === null || Object.values(params).some((v) => typeof v !== 'string')) {
        throw new HangarError('secret_invalid', 'the Proxy-Tokenizer parameters must be a JSON object of strings', { hint: 'for example {"dst": "X-Api-Key", "fmt": "%s"}' });
      }
    }
    const opened = b64 ? this.#opts.keys.open(b64) : undefined;
    if (!opened) {
      throw new HangarError('secret_invalid', 'the Proxy-Tokenizer header is not a secret sealed to this tokenizer', {
        hint: 'seal it to the key from GET /v1/tokenizer/public_key (NaCl sealed box), base64-encoded',
      });
    }
    const secret = parseOpenedSecret(opened);
    opened.fill(0);
    authorize(secret, req.headersDistinct['proxy-authorization'] ?? [], this.#opts.sourceOf(req.socket.remoteAddress ?? ''));
    checkHost(secret, host);
    return injection(secret, params);
  }

  async #forward(req: IncomingMessage, res: ServerResponse, target: Target, address: string, headers: OutgoingHttpHeaders, body: Buffer | undefined): Promise<void> {
    const upstream = httpsRequest({
      host: address,
      port: target.port,
      // The certificate is checked against the name asked for, not the address dialled.
      ...(isIP(target.hostname) ? {} : { servername: target.hostname }),
      method: req.method,
      path: target.path,
      headers: { host: target.host, ...headers },
      agent: false,
      timeout: UPSTREAM_TIMEOUT_MS,
      ...(this.#trust ? { secureContext: this.#trust } : {}),
    });
    const relayed = relayUpstream(upstream, res, {
      host: target.host,
      what: 'the tokenizer connects to it over TLS and verifies its certificate',
      timeoutMs: UPSTREAM_TIMEOUT_MS,
      close: true,
    });
    if (body) upstream.end(body);
    else req.pipe(upstream);
    await relayed;
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject).listen(port, host, () => {
        const address = this.server.address();
        resolve(typeof address === 'object' && address ? address.port : port);
      });
    });
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}

type Target = { host: string; hostname: string; port: number; path: string };

/** The request's absolute http:// URL, as a proxy client sends it, and where it goes upstream. */
function targetOf(req: IncomingMessage): Target {
  let url: URL | undefined;
  try {
    url = /^[a-z][a-z0-9+.-]*:\/\//i.test(req.url ?? '') ? new URL(req.url!) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || url.protocol !== 'http:' || !url.hostname) {
    throw new HangarError('bad_request', 'the tokenizer is an HTTP proxy: the request line must carry an absolute http:// URL', {
      hint: 'configure it as the HTTP proxy and request http://api.example.com/... (not https://); it connects upstream over HTTPS',
    });
  }
  if (url.port === '443') {
    throw new HangarError('bad_request', 'proxied requests must be plain HTTP: port 443 is not accepted', {
      hint: 'request http://host/... without :443; the tokenizer connects to port 443 over TLS itself',
    });
  }
  return {
    host: url.host,
    hostname: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port ? Number(url.port) : 443,
    path: url.pathname + url.search,
  };
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_SIGNED_BODY_BYTES) {
      throw new HangarError('body_too_large', `a body to be signed may be at most ${MAX_SIGNED_BODY_BYTES / 2 ** 20} MiB`, {
        hint: 'sign a smaller body, or pass the message to sign as the msg parameter',
      });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

