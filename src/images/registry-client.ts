import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { Agent, fetch, type RequestInit } from 'undici';
import { HangarError } from '../protocol/errors.ts';
import { sha256Digest, digestMismatch, type Ingest } from './content-store.ts';
import type { ParsedRef } from './image-ref.ts';
import { MANIFEST_ACCEPT } from './manifest.ts';
import { authFailed, basicHeader, fetchBearerToken, parseChallenge, type Credentials } from './registry-auth.ts';
import { errorSnippet, readCapped, sanitize } from './registry-body.ts';
import { isListed, publicOnlyAgent, realmRefusal, redirectRefusal, RefusedAddressError, type PullOrigins } from './registry-target.ts';

// A client for the OCI distribution API: manifests and blobs of one repository at a time.
// Plain HTTP is used only for registries the operator listed as insecure; everything else is
// HTTPS. Redirects and token realms are followed only where registry-target.ts allows, and
// whatever the registry sends is read within limits (registry-body.ts). Errors are translated
// into Hangar codes here so callers never see fetch's TypeErrors.

export type RegistryOptions = {
  insecureRegistries: string[];
  credentials: Record<string, Credentials>;
};

export type FetchedManifest = { bytes: Buffer; contentType: string | null; digest: string };

/** As distribution itself: no image manifest comes near this. */
export const MANIFEST_MAX_BYTES = 4 * 1024 * 1024;
const MAX_REDIRECTS = 10;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

type Purpose = 'registry' | 'realm';

/** How to send a request: a body is made anew for each attempt (a 401 or a redirect resends it). */
type Send = { method: 'GET' | 'HEAD' | 'POST' | 'PUT'; scope: 'pull' | 'pull,push'; body?: () => NonNullable<RequestInit['body']> };

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET']);

export class RegistryClient {
  readonly #opts: RegistryOptions;
  /** Authorization header per registry+repository, reused until the registry rejects it. */
  readonly #auth = new Map<string, string>();
  /** Listed targets (the registry, insecure registries) are reached as named; the rest only at public addresses. */
  readonly #listedAgent = new Agent({ allowH2: false });
  readonly #publicAgent = publicOnlyAgent();

  constructor(opts: RegistryOptions) {
    this.#opts = opts;
  }

  async getManifest(ref: ParsedRef, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const res = await this.#request(ref, `manifests/${reference}`, { accept: MANIFEST_ACCEPT }, signal);
    if (res.status === 404) {
      await res.body?.cancel();
      throw new HangarError('image_not_found', `${ref.apiHost}/${ref.repository}:${reference} was not found in the registry`, {
        hint: `check the tag exists: ${ref.domain}/${ref.repository}:${reference} (list tags at /v2/${ref.repository}/tags/list)`,
        details: { ref: ref.name },
      });
    }
    await this.#expectOk(res, ref, `manifest ${reference}`);
    const bytes = await this.#readCapped(res, ref, MANIFEST_MAX_BYTES, signal);
    if (!bytes) {
      throw new HangarError('registry_error', `registry ${ref.apiHost} sent a manifest larger than ${MANIFEST_MAX_BYTES} bytes for ${ref.repository}:${reference}`, {
        hint: `check the image reference ${ref.name}; no image manifest is that large`,
        details: { registry: ref.domain },
      });
    }
    const digest = sha256Digest(bytes);
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw digestMismatch(reference, digest, `manifest of ${ref.name}`);
    }
    return { bytes, contentType: res.headers.get('content-type'), digest };
  }

  async getBlobBytes(ref: ParsedRef, digest: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
    const res = await this.#request(ref, `blobs/${digest}`, {}, signal);
    await this.#expectOk(res, ref, `blob ${digest}`);
    const bytes = await this.#readCapped(res, ref, maxBytes, signal);
    // A blob larger than its descriptor can only be wrong.
    if (!bytes) throw digestMismatch(digest, 'sha256:(more bytes than the descriptor size)', `blob ${digest}`);
    return bytes;
  }

  /** Streams a blob into `ingest`, continuing from `ingest.offset` with a Range request. */
  async downloadBlob(
    ref: ParsedRef,
    digest: string,
    size: number,
    ingest: Ingest,
    onBytes: (total: number) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    const headers: Record<string, string> = {};
    if (ingest.offset > 0) headers['range'] = `bytes=${ingest.offset}-`;
    const res = await this.#request(ref, `blobs/${digest}`, headers, signal);
    if (res.status === 416) {
      // Everything was already on disk; verification decides whether it was right.
      await res.body?.cancel();
      return;
    }
    await this.#expectOk(res, ref, `blob ${digest}`);
    if (res.status === 206) {
      const range = res.headers.get('content-range') ?? '';
      if (!range.startsWith(`bytes ${ingest.offset}-`)) {
        await res.body?.cancel();
        throw new HangarError('registry_error', `registry ${ref.apiHost} answered range "${sanitize(range, [], 80)}" for bytes ${ingest.offset}-`, {
          hint: 'retry the pull; the partial download will be restarted',
        });
      }
    } else if (ingest.offset > 0) {
      await ingest.reset();
    }
    if (!res.body) return;
    const limit = size;
    async function* capped(body: AsyncIterable<Uint8Array>) {
      let seen = ingest.offset;
      for await (const chunk of body) {
        seen += chunk.length;
        // A blob larger than its descriptor can only be wrong; stop reading instead of filling the disk.
        if (seen > limit) throw digestMismatch(digest, 'sha256:(more bytes than the descriptor size)', `blob ${digest}`);
        yield chunk;
      }
    }
    try {
      await ingest.append(capped(res.body), onBytes);
    } catch (err) {
      throw this.#translate(err, ref, signal);
    }
  }

  /** Whether the repository already has the blob (a push then skips it). */
  async hasBlob(ref: ParsedRef, digest: string, signal?: AbortSignal): Promise<boolean> {
    const res = await this.#request(ref, `blobs/${digest}`, {}, signal, { method: 'HEAD', scope: 'pull,push' });
    await res.body?.cancel();
    if (res.status === 404) return false;
    await this.#expectPushOk(res, ref, `blob ${digest}`);
    return true;
  }

  /**
   * Uploads a blob in one request (the distribution spec's monolithic upload: POST for a
   * location, then PUT the bytes to it with the digest). The file streams from disk.
   */
  async uploadBlob(ref: ParsedRef, digest: string, file: { path: string; size: number }, onBytes: (done: number) => void, signal?: AbortSignal): Promise<void> {
    const push = { scope: 'pull,push' } as const;
    const started = await this.#request(ref, 'blobs/uploads/', {}, signal, { ...push, method: 'POST' });
    await started.body?.cancel();
    await this.#expectPushOk(started, ref, `upload of ${digest}`);
    const location = this.#uploadLocation(ref, started.headers.get('location'));
    location.searchParams.set('digest', digest);
    const headers = { 'content-type': 'application/octet-stream', 'content-length': String(file.size) };
    const body = () => countingStream(file.path, onBytes) as unknown as NonNullable<RequestInit['body']>;
    const res = await this.#request(ref, location.toString(), headers, signal, { ...push, method: 'PUT', body });
    await this.#expectPushOk(res, ref, `blob ${digest}`);
    await res.body?.cancel();
  }

  async putManifest(ref: ParsedRef, tag: string, bytes: Buffer, mediaType: string, signal?: AbortSignal): Promise<void> {
    const headers = { 'content-type': mediaType };
    const res = await this.#request(ref, `manifests/${tag}`, headers, signal, { method: 'PUT', scope: 'pull,push', body: () => bytes });
    await this.#expectPushOk(res, ref, `manifest ${tag}`);
    await res.body?.cancel();
  }

  /** Where the registry said to PUT an upload: resolved against its API and held to the redirect rules. */
  #uploadLocation(ref: ParsedRef, location: string | null): URL {
    let url: URL;
    try {
      url = new URL(location ?? '', this.#baseUrl(ref));
    } catch {
      throw refused('registry_redirect_refused', ref, `it gave the upload location "${sanitize(location ?? '', [], 100)}", which is not a URL`, MISCONFIGURED);
    }
    if (!location) throw new HangarError('registry_error', `registry ${ref.apiHost} started an upload without a Location`, { hint: MISCONFIGURED });
    const why = redirectRefusal(url, this.#origins(ref));
    if (why) throw refused('registry_redirect_refused', ref, why, 'the registry must take uploads over HTTPS (a plain-HTTP registry only on itself)');
    return url;
  }

  /** As #expectOk, but a refusal to write is an auth failure: the robot's fix is the credentials. */
  async #expectPushOk(res: Response, ref: ParsedRef, what: string): Promise<void> {
    if (res.status === 401 || res.status === 403) {
      const text = await errorSnippet(res, this.#secrets(ref));
      throw authFailed(ref.domain, `it refused to accept ${what} for ${ref.repository} (${res.status}${text ? `: ${text}` : ''})`, this.#creds(ref) !== undefined);
    }
    await this.#expectOk(res, ref, what);
  }

  #insecure(ref: ParsedRef): boolean {
    return this.#opts.insecureRegistries.includes(ref.domain) || this.#opts.insecureRegistries.includes(ref.apiHost);
  }

  #baseUrl(ref: ParsedRef): string {
    return `${this.#insecure(ref) ? 'http' : 'https'}://${ref.apiHost}/v2/${ref.repository}/`;
  }

  #origins(ref: ParsedRef): PullOrigins {
    return { registryHost: new URL(this.#baseUrl(ref)).host, registryInsecure: this.#insecure(ref), insecureRegistries: this.#opts.insecureRegistries };
  }

  #creds(ref: ParsedRef): Credentials | undefined {
    return this.#opts.credentials[ref.domain] ?? this.#opts.credentials[ref.apiHost];
  }

  /** What this client may have sent for `ref`: never to be echoed back in an error. */
  #secrets(ref: ParsedRef): string[] {
    const creds = this.#creds(ref);
    const auth = this.#auth.get(`${ref.apiHost}/${ref.repository}`);
    return [
      ...(creds ? [creds.password, basicHeader(creds).slice('Basic '.length)] : []),
      ...(auth ? [auth.slice(auth.indexOf(' ') + 1)] : []),
    ];
  }

  async #request(ref: ParsedRef, path: string, headers: Record<string, string>, signal?: AbortSignal, send: Send = { method: 'GET', scope: 'pull' }): Promise<Response> {
    // `path` is relative to the repository's API root, or an absolute upload location it gave us.
    const url = /^https?:\/\//.test(path) ? path : this.#baseUrl(ref) + path;
    const key = `${ref.apiHost}/${ref.repository}`;
    const attempt = (auth: string | undefined) => this.#follow(url, auth ? { ...headers, authorization: auth } : headers, ref, 'registry', signal, send);
    const cached = this.#auth.get(key);
    let res = await attempt(cached);
    if (res.status !== 401) return res;

    const creds = this.#creds(ref);
    const challenge = parseChallenge(res.headers.get('www-authenticate') ?? '');
    await res.body?.cancel();
    if (cached) this.#auth.delete(key);
    let auth: string;
    if (challenge?.scheme === 'bearer') {
      const token = await fetchBearerToken({
        challenge,
        registry: ref.domain,
        defaultScope: `repository:${ref.repository}:${send.scope}`,
        creds,
        signal,
        fetchOrThrow: (u, init) => this.#follow(u, init.headers as Record<string, string>, ref, 'realm', signal),
      });
      auth = `Bearer ${token}`;
    } else if (challenge?.scheme === 'basic' && creds) {
      auth = basicHeader(creds);
    } else {
      throw authFailed(ref.domain, `it requires ${challenge?.scheme ?? 'unknown'} authentication`, creds !== undefined);
    }
    res = await attempt(auth);
    if (res.status === 401) {
      await res.body?.cancel();
      throw authFailed(ref.domain, 'the credentials or token were rejected', creds !== undefined);
    }
    this.#auth.set(key, auth);
    return res;
  }

  /**
   * A request that follows redirects itself, so each hop is checked before anything is sent to it.
   * The Authorization header goes only to the origin it was meant for.
   */
  async #follow(url: string, headers: Record<string, string>, ref: ParsedRef, purpose: Purpose, signal?: AbortSignal, send: Send = { method: 'GET', scope: 'pull' }): Promise<Response> {
    const origins = this.#origins(ref);
    let target = new URL(url);
    if (purpose === 'realm') {
      const why = realmRefusal(target, origins);
      if (why) throw refused('registry_realm_refused', ref, why, `use HTTPS for the token service, or if ${target.host} is yours, add ${target.host} to insecure_registries (config.json or --insecure-registry)`);
    }
    let sent = headers;
    for (let hops = 0; ; hops++) {
      const res = await this.#fetch(target, sent, origins, ref, purpose, signal, send);
      if (!REDIRECT_STATUSES.has(res.status)) return res;
      await res.body?.cancel();
      const location = res.headers.get('location') ?? '';
      let next: URL;
      try {
        next = new URL(location, target);
      } catch {
        throw refused('registry_redirect_refused', ref, `it redirected to "${sanitize(location, [], 100)}", which is not a URL`, MISCONFIGURED);
      }
      if (hops >= MAX_REDIRECTS) throw refused('registry_redirect_refused', ref, `it redirected more than ${MAX_REDIRECTS} times`, MISCONFIGURED);
      const why = redirectRefusal(next, origins);
      if (why) throw refused('registry_redirect_refused', ref, why, 'the registry must redirect to HTTPS (a plain-HTTP registry only to itself); ask its operator, or pull from another registry');
      if (next.origin !== target.origin) {
        const { authorization: _dropped, ...rest } = sent;
        sent = rest;
      }
      target = next;
    }
  }

  async #fetch(target: URL, headers: Record<string, string>, origins: PullOrigins, ref: ParsedRef, purpose: Purpose, signal: AbortSignal | undefined, send: Send): Promise<Response> {
    const body = send.body?.();
    const init: RequestInit = {
      method: send.method,
      headers,
      ...(body ? { body, duplex: 'half' } : {}),
      redirect: 'manual',
      dispatcher: isListed(target, origins) ? this.#listedAgent : this.#publicAgent,
      ...(signal ? { signal } : {}),
    };
    try {
      return (await fetch(target, init)) as unknown as Response;
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause;
      if (cause instanceof RefusedAddressError) {
        const what = purpose === 'realm' ? 'its token realm' : 'it redirected to';
        throw refused(purpose === 'realm' ? 'registry_realm_refused' : 'registry_redirect_refused', ref, `${what} ${target.host}, which resolves to ${cause.address}, a private, loopback or link-local address`,
          `if ${target.host} is yours, add ${target.host} to insecure_registries (config.json or --insecure-registry); otherwise do not pull from ${ref.domain}`);
      }
      throw this.#translate(err, ref, signal);
    }
  }

  async #readCapped(res: Response, ref: ParsedRef, maxBytes: number, signal?: AbortSignal): Promise<Buffer | undefined> {
    try {
      return await readCapped(res, maxBytes);
    } catch (err) {
      throw this.#translate(err, ref, signal);
    }
  }

  #translate(err: unknown, ref: ParsedRef, signal?: AbortSignal): unknown {
    if (signal?.aborted || err instanceof HangarError) return err;
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const code = cause?.code ?? '';
    const text = `${(err as Error).message} ${cause?.message ?? ''}`;
    const tls = /SSL|TLS|EPROTO|wrong version number|packet length/i.test(`${code} ${text}`);
    // A certificate's names, which such messages quote, are the server's to choose.
    const said = (message: string) => sanitize(message, [], 160);
    if (tls) {
      return new HangarError('registry_unreachable', `could not make a TLS connection to registry ${ref.apiHost} (${said(cause?.message ?? code)})`, {
        hint: `if ${ref.domain} serves plain HTTP, add ${ref.domain} to insecure registries; otherwise check its TLS certificate`,
        details: { registry: ref.domain, code },
        cause: err,
      });
    }
    if (NETWORK_CODES.has(code) || err instanceof TypeError) {
      return new HangarError('registry_unreachable', `registry ${ref.apiHost} is unreachable (${said(code || cause?.message || (err as Error).message)})`, {
        hint: `check that ${ref.domain} is up and reachable from this host, then retry`,
        details: { registry: ref.domain, code },
        cause: err,
      });
    }
    return err;
  }

  async #expectOk(res: Response, ref: ParsedRef, what: string): Promise<void> {
    if (res.ok) return;
    const text = await errorSnippet(res, this.#secrets(ref));
    throw new HangarError('registry_error', `registry ${ref.apiHost} answered ${res.status} for ${what} of ${ref.repository}${text ? `: ${text}` : ''}`, {
      hint: res.status >= 500 ? 'the registry failed; retry later' : `check the image reference ${ref.name}`,
      details: { registry: ref.domain, status: res.status },
    });
  }
}

/** A file's bytes as a web stream, reporting how many have been read. */
function countingStream(path: string, onBytes: (done: number) => void): ReadableStream<Uint8Array> {
  let done = 0;
  const counted = createReadStream(path).map((chunk: Buffer) => {
    done += chunk.length;
    onBytes(done);
    return chunk;
  });
  return Readable.toWeb(counted as Readable) as ReadableStream<Uint8Array>;
}

const MISCONFIGURED = 'the registry is misconfigured or hostile; retry later or pull from another registry';

function refused(code: 'registry_redirect_refused' | 'registry_realm_refused', ref: ParsedRef, why: string, hint: string): HangarError {
  return new HangarError(code, `pull of ${ref.name} stopped: registry ${ref.apiHost} ${why}`, { hint, details: { registry: ref.domain } });
}
