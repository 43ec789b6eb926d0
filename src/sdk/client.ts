import type {
  App, ExecResponse, ExecStreamRequest, Lease, Machine, MachineEvent, CreateMachineRequest, ProcessStat, UpdateMachineRequest,
} from '../protocol/schemas.ts';
import type { WaitableState } from '../protocol/states.ts';
import type { Checkpoint, CreateCheckpointRequest, Diff, ForkRequest } from '../protocol/checkpoints.ts';
import type { CommitProgress, CommitRequest, CommitResult } from '../protocol/commit.ts';
import type { AppSettingsRequest, Egress } from '../protocol/app-settings.ts';
import type { CreateVolumeRequest, ExtendVolumeResponse, UpdateVolumeRequest, Volume, VolumeSnapshot } from '../protocol/volumes.ts';
import type { PullProgress } from '../protocol/pull-progress.ts';
import type { DaemonAddresses } from '../protocol/daemon-addresses.ts';
import type { PublicKeyResponse, SealRequest, SealResponse } from '../protocol/sealed-secret.ts';
import type { AppSecret, AppSecretInput } from '../protocol/app-secrets.ts';
import { HangarApiError } from './errors.ts';
import { ExecHandle } from './exec-handle.ts';
import { ExecSession, type ExecSessionStart } from './exec-session.ts';
import { SessionsClient } from './sessions.ts';
import type { MachineMetrics } from '../protocol/machine-metrics.ts';
import type { AppUsage, MachineUsage } from '../protocol/usage.ts';
import type { EgressEvent } from '../protocol/egress-log.ts';
import { FileWatch } from './file-watch.ts';
import { eventData, splitStream } from './response-stream.ts';
import type { Caveat } from '../protocol/token-format.ts';

export type MintedToken = { token: string; id: string; caveats: Caveat[] };

// A typed client for the Hangar REST API. Uses only fetch, so it runs in browsers and edge
// runtimes as well as Node. Every call takes `timeoutMs` and an AbortSignal.

export type CallOptions = { timeoutMs?: number; signal?: AbortSignal; leaseNonce?: string };
/** For `raw`: a body of raw bytes (whole or streamed) with its content type, and extra headers. */
export type RawOptions = CallOptions & {
  accept?: string;
  rawBody?: Uint8Array | ReadableStream<Uint8Array>;
  /** Content-Type of rawBody; application/octet-stream unless set. */
  contentType?: string;
  headers?: Record<string, string>;
};
/** A usage window; either end left out is open (the beginning of records, now). */
export type UsageWindow = { from?: Date | string | number; to?: Date | string | number };

function windowQuery(w: UsageWindow | undefined): string {
  const text = (v: Date | string | number) => (v instanceof Date ? v.toISOString() : String(v));
  const q = new URLSearchParams({ ...(w?.from !== undefined ? { from: text(w.from) } : {}), ...(w?.to !== undefined ? { to: text(w.to) } : {}) });
  return q.size ? `?${q}` : '';
}

export type ClientOptions = { baseUrl: string; token: string; fetch?: typeof fetch };

type Json = Record<string, unknown> | unknown[];

export type ImageSummary = { name: string; digest: string; size_bytes: number; layers: number; created_at: string };
export type ImageInfo = {
  name: string;
  digest: string;
  image_ref: Record<string, unknown>;
  config: Record<string, unknown>;
  layers: number;
  size_bytes: number;
  created_at?: string;
};

export class HangarClient {
  readonly baseUrl: string;
  readonly #token: string;
  readonly #fetch: typeof fetch;

  constructor(opts: ClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/$/, '');
    this.#token = opts.token;
    this.#fetch = opts.fetch ?? fetch;
  }

  /** A raw call; resolves to the response (ok statuses only), rejects with HangarApiError. */
  async raw(method: string, path: string, body?: Json, opts: RawOptions = {}): Promise<Response> {
    const signals = [opts.signal, opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined].filter((s) => s !== undefined);
    const headers: Record<string, string> = { ...opts.headers, authorization: `Bearer ${this.#token}`, accept: opts.accept ?? 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (opts.rawBody !== undefined) headers['content-type'] = opts.contentType ?? 'application/octet-stream';
    if (opts.leaseNonce) headers['fly-machine-lease-nonce'] = opts.leaseNonce;
    const streaming = typeof ReadableStream !== 'undefined' && opts.rawBody instanceof ReadableStream;
    let res: Response;
    try {
      res = await this.#fetch(this.baseUrl + path, {
        method,
        headers,
        body: opts.rawBody ?? (body === undefined ? undefined : JSON.stringify(body)),
        signal: signals.length ? AbortSignal.any(signals) : undefined,
        // A streamed request body needs half duplex (fetch's rule; Node enforces it).
        ...(streaming ? { duplex: 'half' } : {}),
      } as RequestInit);
    } catch (err) {
      if ((err as Error).name === 'AbortError' || (err as Error).name === 'TimeoutError') throw err;
      throw new HangarApiError(0, { hint: `is the daemon running? start it with: hangar serve` }, `cannot reach ${this.baseUrl}: ${(err as Error).message}`);
    }
    if (!res.ok) {
      const text = await res.text();
      let parsed: Record<string, unknown> = {};
      try {
        parsed = JSON.parse(text) as Record<string, unknown>;
      } catch {
        parsed = { error: text };
      }
      throw new HangarApiError(res.status, parsed, `HTTP ${res.status}`);
    }
    return res;
  }

  async call<T>(method: string, path: string, body?: Json, opts: CallOptions = {}): Promise<T> {
    const res = await this.raw(method, path, body, opts);
    const text = await res.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** Where the daemon serves: its API, its edge proxy, and the domain apps are reached under. */
  addresses(opts?: CallOptions): Promise<DaemonAddresses> {
    return this.call<DaemonAddresses>('GET', '/v1/addresses', undefined, opts);
  }

  readonly apps = {
    list: (opts?: CallOptions) =>
      this.call<{ total_apps: number; apps: Array<{ id: string; name: string; machine_count: number; egress: Egress; autostop_idle: string; nested_namespaces: boolean }> }>('GET', '/v1/apps', undefined, opts),
    /** `settings`: Hangar's app settings, e.g. `{ egress: { policy: 'deny' }, autostop_idle: '10m', nested_namespaces: true }`. */
    create: (name: string, opts?: CallOptions & { settings?: AppSettingsRequest }) =>
      this.call<App>('POST', '/v1/apps', { app_name: name, ...opts?.settings }, opts),
    get: (name: string, opts?: CallOptions) => this.call<App>('GET', `/v1/apps/${enc(name)}`, undefined, opts),
    /** Changes the settings given; a new egress policy applies to the app's running machines at once,
     * nested_namespaces at each machine's next start or update. */
    update: (name: string, settings: AppSettingsRequest, opts?: CallOptions) => this.call<App>('PATCH', `/v1/apps/${enc(name)}`, settings, opts),
    delete: (name: string, opts?: CallOptions) => this.call<void>('DELETE', `/v1/apps/${enc(name)}`, undefined, opts),
    /** Usage by the second in a window (`from`/`to`: Dates, ISO times or Unix seconds; all of it up to now by default). */
    usage: (name: string, opts?: CallOptions & UsageWindow) => this.call<AppUsage>('GET', `/v1/apps/${enc(name)}/usage${windowQuery(opts)}`, undefined, opts),
  };

  readonly machines = {
    list: (app: string, opts?: CallOptions & { includeDeleted?: boolean }) =>
      this.call<Machine[]>('GET', `/v1/apps/${enc(app)}/machines${opts?.includeDeleted ? '?include_deleted=true' : ''}`, undefined, opts),
    create: (app: string, req: CreateMachineRequest, opts?: CallOptions) => this.call<Machine>('POST', `/v1/apps/${enc(app)}/machines`, req, opts),
    get: (app: string, id: string, opts?: CallOptions) => this.call<Machine>('GET', this.#m(app, id), undefined, opts),
    update: (app: string, id: string, req: UpdateMachineRequest, opts?: CallOptions) => this.call<Machine>('POST', this.#m(app, id), req, opts),
    start: (app: string, id: string, opts?: CallOptions) => this.call<{ previous_state: string }>('POST', `${this.#m(app, id)}/start`, undefined, opts),
    stop: (app: string, id: string, req: { signal?: string; timeout?: string } = {}, opts?: CallOptions) =>
      this.call<{ ok: boolean }>('POST', `${this.#m(app, id)}/stop`, req, opts),
    restart: (app: string, id: string, opts?: CallOptions) => this.call<{ ok: boolean }>('POST', `${this.#m(app, id)}/restart`, undefined, opts),
    signal: (app: string, id: string, signal: string, opts?: CallOptions) => this.call<{ ok: boolean }>('POST', `${this.#m(app, id)}/signal`, { signal }, opts),
    destroy: (app: string, id: string, opts?: CallOptions & { force?: boolean }) =>
      this.call<{ ok: boolean }>('DELETE', `${this.#m(app, id)}${opts?.force ? '?force=true' : ''}`, undefined, opts),
    wait: (app: string, id: string, state: WaitableState, opts?: CallOptions & { timeoutS?: number; instanceId?: string }) => {
      const q = new URLSearchParams({ state, timeout: String(opts?.timeoutS ?? 60), ...(opts?.instanceId ? { instance_id: opts.instanceId } : {}) });
      return this.call<{ ok: boolean }>('GET', `${this.#m(app, id)}/wait?${q}`, undefined, opts);
    },
    /** `checkpoint: true` takes a checkpoint first and answers its id as checkpoint_id. */
    /** `maxOutputBytes` bounds the output answered (default 1 MiB, stdout and stderr together; head and tail kept). */
    exec: (app: string, id: string, command: string[], opts?: CallOptions & { timeoutS?: number; stdin?: string; checkpoint?: boolean; maxOutputBytes?: number }) =>
      this.call<ExecResponse>('POST', `${this.#m(app, id)}/exec`, {
        command, ...(opts?.timeoutS ? { timeout: opts.timeoutS } : {}), ...(opts?.stdin !== undefined ? { stdin: opts.stdin } : {}), ...(opts?.checkpoint ? { checkpoint: true } : {}),
        ...(opts?.maxOutputBytes ? { max_output_bytes: opts.maxOutputBytes } : {}),
      }, opts),
    /** Streams a command's output as it runs (POST …/exec/stream); `kill()` on the handle stops it. `wait()` keeps
     * at most `maxOutputBytes` of it (default 1 MiB; head and tail). */
    execStream: (app: string, id: string, req: ExecStreamRequest, opts: CallOptions & { maxOutputBytes?: number } = {}) => {
      const { maxOutputBytes, ...call } = opts;
      const abort = new AbortController();
      const signal = call.signal ? AbortSignal.any([call.signal, abort.signal]) : abort.signal;
      const response = this.raw('POST', `${this.#m(app, id)}/exec/stream`, req, { ...call, signal, accept: 'application/x-ndjson' });
      return new ExecHandle(response, abort, maxOutputBytes);
    },
    /** An interactive command over a WebSocket (stdin, tty resize, kill); see ExecSession. */
    execSession: (app: string, id: string, start: ExecSessionStart) =>
      ExecSession.open(`${this.baseUrl.replace(/^http/, 'ws')}${this.#m(app, id)}/exec/ws`, this.#token, start),
    ps: (app: string, id: string, opts?: CallOptions & { sortBy?: string; order?: 'asc' | 'desc' }) =>
      this.call<ProcessStat[]>('GET', `${this.#m(app, id)}/ps?sort_by=${opts?.sortBy ?? 'pid'}&order=${opts?.order ?? 'asc'}`, undefined, opts),
    events: (app: string, id: string, opts?: CallOptions) => this.call<MachineEvent[]>('GET', `${this.#m(app, id)}/events`, undefined, opts),
    /**
     * Watches a directory of a started machine; resolves once every directory is watched, so
     * whatever happens after is seen. Iterate the result for changes; `close()` ends it.
     */
    watchFiles: (app: string, id: string, path: string, opts: CallOptions & { recursive?: boolean } = {}) => {
      const abort = new AbortController();
      const signal = opts.signal ? AbortSignal.any([opts.signal, abort.signal]) : abort.signal;
      const q = new URLSearchParams({ path, recursive: String(opts.recursive ?? false) });
      return FileWatch.open(this.raw('GET', `${this.#m(app, id)}/files/watch?${q}`, undefined, { leaseNonce: opts.leaseNonce, signal, accept: 'text/event-stream' }), abort);
    },
    /** Resource use now: CPU seconds, memory and processes (null unless it runs), disk and network bytes. */
    metrics: (app: string, id: string, opts?: CallOptions) => this.call<MachineMetrics>('GET', `${this.#m(app, id)}/metrics`, undefined, opts),
    /** The machine's usage by the second in a window (see apps.usage); destroyed machines too. */
    usage: (app: string, id: string, opts?: CallOptions & UsageWindow) => this.call<MachineUsage>('GET', `${this.#m(app, id)}/usage${windowQuery(opts)}`, undefined, opts),
    logs: (app: string, id: string, opts?: CallOptions & { tail?: number }) =>
      this.call<{ lines: string[] }>('GET', `${this.#m(app, id)}/logs?tail=${opts?.tail ?? 1000}`, undefined, opts),
    /** Yields log lines as they are written, until the signal aborts. */
    followLogs: (app: string, id: string, opts: CallOptions & { tail?: number } = {}) => this.#follow(`${this.#m(app, id)}/logs`, opts, (line) => line),
    /** The machine's egress log: names it looked up, connections it opened (bytes when they end), attempts refused. */
    egress: (app: string, id: string, opts?: CallOptions & { tail?: number }) =>
      this.call<{ events: EgressEvent[] }>('GET', `${this.#m(app, id)}/egress?tail=${opts?.tail ?? 1000}`, undefined, opts),
    /** Yields egress events as they happen (after the last `tail`), until the signal aborts. */
    followEgress: (app: string, id: string, opts: CallOptions & { tail?: number } = {}) => this.#follow(`${this.#m(app, id)}/egress`, opts, (data) => JSON.parse(data) as EgressEvent),
    /** New machines on copies of this one's filesystem (now, or a checkpoint's); started unless skip_launch. */
    fork: (app: string, id: string, req: ForkRequest = {}, opts?: CallOptions) => this.call<{ machines: Machine[] }>('POST', `${this.#m(app, id)}/fork`, req, opts),
    /**
     * An OCI image of the machine (its image plus what it wrote, now or as a checkpoint holds it),
     * stored under `req.image` and pushed with `push: true`; progress arrives through onProgress.
     */
    commit: (app: string, id: string, req: CommitRequest, opts: CallOptions & { onProgress?: (p: CommitProgress) => void } = {}) =>
      opts.onProgress ? this.#commitStreamed(app, id, req, opts) : this.call<CommitResult>('POST', `${this.#m(app, id)}/commit`, req, opts),
    lease: (app: string, id: string, ttlS: number, opts?: CallOptions) => this.call<Lease>('POST', `${this.#m(app, id)}/lease`, { ttl: ttlS }, opts),
  };

  /** Captures of a machine's disk it can be rolled back to; `checkpoint` is an id or a name. */
  readonly checkpoints = {
    create: (app: string, id: string, req: CreateCheckpointRequest = {}, opts?: CallOptions) => this.call<Checkpoint>('POST', `${this.#m(app, id)}/checkpoints`, req, opts),
    list: (app: string, id: string, opts?: CallOptions) => this.call<Checkpoint[]>('GET', `${this.#m(app, id)}/checkpoints`, undefined, opts),
    get: (app: string, id: string, checkpoint: string, opts?: CallOptions) => this.call<Checkpoint>('GET', `${this.#m(app, id)}/checkpoints/${enc(checkpoint)}`, undefined, opts),
    delete: (app: string, id: string, checkpoint: string, opts?: CallOptions) =>
      this.call<{ ok: boolean }>('DELETE', `${this.#m(app, id)}/checkpoints/${enc(checkpoint)}`, undefined, opts),
    /** What the checkpoint changed since the one before it. */
    diff: (app: string, id: string, checkpoint: string, opts?: CallOptions & DiffOptions) =>
      this.call<Diff>('GET', `${this.#m(app, id)}/checkpoints/${enc(checkpoint)}/diff${diffQuery(opts)}`, undefined, opts),
    /** What changed from a checkpoint (default: the image) to another (default: the machine now). */
    diffMachine: (app: string, id: string, opts?: CallOptions & DiffOptions & { from?: string; to?: string }) =>
      this.call<Diff>('GET', `${this.#m(app, id)}/diff${diffQuery(opts)}`, undefined, opts),
    /** Rolls the disk back; a started machine restarts on it. Answers the machine as it is after. */
    restore: (app: string, id: string, checkpoint: string, opts?: CallOptions) =>
      this.call<Machine>('POST', `${this.#m(app, id)}/checkpoints/${enc(checkpoint)}/restore`, undefined, opts),
  };

  /** Fly's volumes: mount one with `config.mounts: [{ volume: id, path }]`; one machine has it at a time. */
  readonly volumes = {
    list: (app: string, opts?: CallOptions) => this.call<Volume[]>('GET', `/v1/apps/${enc(app)}/volumes`, undefined, opts),
    /** Empty, or a copy of another volume (`source_volume_id`) or of a snapshot (`snapshot_id`). */
    create: (app: string, req: CreateVolumeRequest, opts?: CallOptions) => this.call<Volume>('POST', `/v1/apps/${enc(app)}/volumes`, req, opts),
    get: (app: string, id: string, opts?: CallOptions) => this.call<Volume>('GET', this.#v(app, id), undefined, opts),
    update: (app: string, id: string, req: UpdateVolumeRequest, opts?: CallOptions) => this.call<Volume>('PUT', this.#v(app, id), req, opts),
    /** Grows it, also while a machine uses it (which sees the new size at once). */
    extend: (app: string, id: string, sizeGb: number, opts?: CallOptions) => this.call<ExtendVolumeResponse>('PUT', `${this.#v(app, id)}/extend`, { size_gb: sizeGb }, opts),
    /** Refused while a machine has it. */
    delete: (app: string, id: string, opts?: CallOptions) => this.call<Volume>('DELETE', this.#v(app, id), undefined, opts),
    snapshots: {
      list: (app: string, id: string, opts?: CallOptions) => this.call<VolumeSnapshot[]>('GET', `${this.#v(app, id)}/snapshots`, undefined, opts),
      create: (app: string, id: string, opts?: CallOptions) => this.call<VolumeSnapshot>('POST', `${this.#v(app, id)}/snapshots`, undefined, opts),
    },
  };

  /**
   * The tokenizer (Fly's protocol): seal a credential so machines can use it without seeing it.
   * A machine sends http://host/... through the proxy (`proxy` in the answers) with
   * `Proxy-Tokenizer: <sealed>` and `Proxy-Authorization: Bearer <password>`; the credential goes
   * only to the allowed hosts. Nothing opens a sealed secret for a caller.
   */
  readonly tokenizer = {
    publicKey: (opts?: CallOptions) => this.call<PublicKeyResponse>('GET', '/v1/tokenizer/public_key', undefined, opts),
    seal: (secret: SealRequest, opts?: CallOptions) => this.call<SealResponse>('POST', '/v1/tokenizer/seal', secret as Json, opts),
  };

  /**
   * App secrets (transparent mode): machines of the app see only `placeholder` in env var `name`,
   * and the gateway's egress proxy puts the value into requests to `hosts` in its place. No call
   * returns a value.
   */
  readonly secrets = {
    set: (app: string, secret: AppSecretInput, opts?: CallOptions) => this.call<AppSecret>('POST', `/v1/apps/${enc(app)}/secrets`, secret as Json, opts),
    list: async (app: string, opts?: CallOptions) => (await this.call<{ secrets: AppSecret[] }>('GET', `/v1/apps/${enc(app)}/secrets`, undefined, opts)).secrets,
    get: (app: string, name: string, opts?: CallOptions) => this.call<AppSecret>('GET', `/v1/apps/${enc(app)}/secrets/${enc(name)}`, undefined, opts),
    unset: (app: string, name: string, opts?: CallOptions) => this.call<void>('DELETE', `/v1/apps/${enc(app)}/secrets/${enc(name)}`, undefined, opts),
  };

  /** Commands that outlive the connection: start, read by offset, follow, attach, write, kill (sessions.ts). */
  readonly sessions = new SessionsClient(this, () => this.#token);

  readonly tokens = {
    /** With the admin token, a new token family limited by `caveats`; with a narrowed token, that token narrowed further.
     * attenuate() does the latter without the daemon. */
    create: (caveats: Caveat[], opts?: CallOptions) => this.call<MintedToken>('POST', '/v1/tokens', { caveats }, opts),
    /** `{ token }` revokes it and every token narrowed from it; `{ id }` (admin token only) its whole family. */
    revoke: (which: { token: string } | { id: string }, opts?: CallOptions) => this.call<{ ok: boolean }>('POST', '/v1/tokens/revoke', which, opts),
  };

  readonly images = {
    list: (opts?: CallOptions) => this.call<ImageSummary[]>('GET', '/v1/images', undefined, opts),
    inspect: (image: string, opts?: CallOptions) => this.call<ImageInfo>('GET', `/v1/images/inspect?image=${enc(image)}`, undefined, opts),
    remove: (image: string, opts?: CallOptions) => this.call<{ ok: boolean }>('DELETE', `/v1/images?image=${enc(image)}`, undefined, opts),
    /** Pulls (or builds a hangar/* base); progress arrives through onProgress as it happens. */
    pull: (image: string, opts: CallOptions & { onProgress?: (p: PullProgress) => void } = {}) => this.#pull(image, opts),
  };

  #v(app: string, id: string): string {
    return `/v1/apps/${enc(app)}/volumes/${enc(id)}`;
  }

  #m(app: string, id: string): string {
    return `/v1/apps/${enc(app)}/machines/${enc(id)}`;
  }

  /** The data of each event of GET `path`?follow=true (logs, egress), parsed, until the signal aborts. */
  async *#follow<T>(path: string, opts: CallOptions & { tail?: number }, parse: (data: string) => T): AsyncGenerator<T> {
    const res = await this.raw('GET', `${path}?follow=true&tail=${opts.tail ?? 100}`, undefined, { ...opts, accept: 'text/event-stream' });
    for await (const data of eventData(res)) yield parse(data);
  }

  async #commitStreamed(app: string, id: string, req: CommitRequest, opts: CallOptions & { onProgress?: (p: CommitProgress) => void }): Promise<CommitResult> {
    const res = await this.raw('POST', `${this.#m(app, id)}/commit`, req, { ...opts, accept: 'application/x-ndjson' });
    for await (const line of splitStream(res, '\n')) {
      const msg = JSON.parse(line) as { progress?: CommitProgress; result?: CommitResult; code?: string };
      if (msg.progress) opts.onProgress?.(msg.progress);
      else if (msg.result) return msg.result;
      else if (msg.code) throw new HangarApiError(500, msg as Record<string, string>, 'commit failed');
    }
    throw new HangarApiError(500, { hint: 'retry the commit' }, 'the commit stream ended without a result');
  }

  async #pull(image: string, opts: CallOptions & { onProgress?: (p: PullProgress) => void }): Promise<ImageInfo> {
    const res = await this.raw('POST', '/v1/images/pull', { image }, { ...opts, accept: 'application/x-ndjson' });
    for await (const line of splitStream(res, '\n')) {
      const msg = JSON.parse(line) as { progress?: PullProgress; image?: ImageInfo; code?: string; error?: string };
      if (msg.progress) opts.onProgress?.(msg.progress);
      else if (msg.image) return msg.image;
      else if (msg.code) throw new HangarApiError(502, msg as Record<string, string>, 'pull failed');
    }
    throw new HangarApiError(502, { hint: 'retry the pull' }, 'the pull stream ended without a result');
  }
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

export type DiffOptions = { content?: boolean; limit?: number };

function diffQuery(opts: (DiffOptions & { from?: string; to?: string }) | undefined): string {
  const q = new URLSearchParams();
  if (opts?.from) q.set('from', opts.from);
  if (opts?.to) q.set('to', opts.to);
  if (opts?.content) q.set('content', 'true');
  if (opts?.limit) q.set('limit', String(opts.limit));
  const text = q.toString();
  return text ? `?${text}` : '';
}
