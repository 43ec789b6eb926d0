import { HangarError } from '../protocol/errors.ts';
import { sha256Digest, digestMismatch, type Ingest } from './content-store.ts';
import type { ParsedRef } from './image-ref.ts';
import { MANIFEST_ACCEPT } from './manifest.ts';
import { authFailed, basicHeader, fetchBearerToken, parseChallenge, type Credentials } from './registry-auth.ts';

// A client for the OCI distribution API: manifests and blobs of one repository at a time.
// Plain HTTP is used only for registries the operator listed as insecure; everything else is
// HTTPS. Errors are translated into Hangar codes here so callers never see fetch's TypeErrors.

export type RegistryOptions = {
  insecureRegistries: string[];
  credentials: Record<string, Credentials>;
};

export type FetchedManifest = { bytes: Buffer; contentType: string | null; digest: string };

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET']);

export class RegistryClient {
  readonly #opts: RegistryOptions;
  /** Authorization header per registry+repository, reused until the registry rejects it. */
  readonly #auth = new Map<string, string>();

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
    const bytes = Buffer.from(await res.arrayBuffer());
    const digest = sha256Digest(bytes);
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw digestMismatch(reference, digest, `manifest of ${ref.name}`);
    }
    return { bytes, contentType: res.headers.get('content-type'), digest };
  }

  async getBlobBytes(ref: ParsedRef, digest: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
    const res = await this.#request(ref, `blobs/${digest}`, {}, signal);
    await this.#expectOk(res, ref, `blob ${digest}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    if (bytes.length > maxBytes) throw digestMismatch(digest, sha256Digest(bytes), `blob ${digest}`);
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
        throw new HangarError('registry_error', `registry ${ref.apiHost} answered range "${range}" for bytes ${ingest.offset}-`, {
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

  #baseUrl(ref: ParsedRef): string {
    const insecure = this.#opts.insecureRegistries.includes(ref.domain) || this.#opts.insecureRegistries.includes(ref.apiHost);
    return `${insecure ? 'http' : 'https'}://${ref.apiHost}/v2/${ref.repository}/`;
  }

  #creds(ref: ParsedRef): Credentials | undefined {
    return this.#opts.credentials[ref.domain] ?? this.#opts.credentials[ref.apiHost];
  }

  async #request(ref: ParsedRef, path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    const url = this.#baseUrl(ref) + path;
    const key = `${ref.apiHost}/${ref.repository}`;
    const send = (auth: string | undefined) =>
      this.#fetch(url, { headers: auth ? { ...headers, authorization: auth } : headers, signal }, ref, signal);
    const cached = this.#auth.get(key);
    let res = await send(cached);
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
        defaultScope: `repository:${ref.repository}:pull`,
        creds,
        signal,
        fetchOrThrow: (u, init) => this.#fetch(u, init, ref, signal),
      });
      auth = `Bearer ${token}`;
    } else if (challenge?.scheme === 'basic' && creds) {
      auth = basicHeader(creds);
    } else {
      throw authFailed(ref.domain, `it requires ${challenge?.scheme ?? 'unknown'} authentication`, creds !== undefined);
    }
    res = await send(auth);
    if (res.status === 401) {
      await res.body?.cancel();
      throw authFailed(ref.domain, 'the credentials or token were rejected', creds !== undefined);
    }
    this.#auth.set(key, auth);
    return res;
  }

  async #fetch(url: string, init: RequestInit, ref: ParsedRef, signal?: AbortSignal): Promise<Response> {
    try {
      return await fetch(url, init);
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
    if (tls) {
      return new HangarError('registry_unreachable', `could not make a TLS connection to registry ${ref.apiHost} (${cause?.message ?? code})`, {
        hint: `if ${ref.domain} serves plain HTTP, add ${ref.domain} to insecure registries; otherwise check its TLS certificate`,
        details: { registry: ref.domain, code },
        cause: err,
      });
    }
    if (NETWORK_CODES.has(code) || err instanceof TypeError) {
      return new HangarError('registry_unreachable', `registry ${ref.apiHost} is unreachable (${code || cause?.message || (err as Error).message})`, {
        hint: `check that ${ref.domain} is up and reachable from this host, then retry`,
        details: { registry: ref.domain, code },
        cause: err,
      });
    }
    return err;
  }

  async #expectOk(res: Response, ref: ParsedRef, what: string): Promise<void> {
    if (res.ok) return;
    const text = (await res.text().catch(() => '')).slice(0, 300);
    throw new HangarError('registry_error', `registry ${ref.apiHost} answered ${res.status} for ${what} of ${ref.repository}: ${text}`, {
      hint: res.status >= 500 ? 'the registry failed; retry later' : `check the image reference ${ref.name}`,
      details: { registry: ref.domain, status: res.status },
    });
  }
}
