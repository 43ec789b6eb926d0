import type { FileEntry as WireFileEntry, FileStat, Machine as WireMachine, MachineEvent, ProcessStat, UpdateMachineRequest } from '../protocol/schemas.ts';
import type { WaitableState } from '../protocol/states.ts';
import type { MachineMetrics } from '../protocol/machine-metrics.ts';
import type { EgressEvent } from '../protocol/egress-log.ts';
import type { Checkpoint, CreateCheckpointRequest, ForkRequest } from '../protocol/checkpoints.ts';
import type { CallOptions, HangarClient, RawOptions } from './client.ts';
import type { ExecHandle } from './exec-handle.ts';
import type { ExecSession, ExecSessionStart } from './exec-session.ts';
import { MachineSessions } from './sessions.ts';
import type { FileWatch } from './file-watch.ts';

// A machine as a robot holds it: the last known record plus the verbs that act on it.

/** `checkpoint: true` captures the machine before the command; the result's checkpointId names it. */
export type ExecOptions = CallOptions & {
  timeoutS?: number; stdin?: string; env?: Record<string, string>; cwd?: string; checkpoint?: boolean;
  /** The most output `wait()` keeps, stdout and stderr together (head and tail); default 1 MiB. */
  maxOutputBytes?: number;
};
export type FileEntry = WireFileEntry;
/** Bytes start..end of a file, both inclusive as in HTTP; without end, to the end of the file. */
export type ByteRange = { start: number; end?: number };

export class Machine {
  readonly app: string;
  readonly id: string;
  /** The record as of the last call that returned it; `refresh()` fetches it again. */
  record: WireMachine;
  readonly files: MachineFiles;
  /** Commands that outlive the connection (and the daemon); see SessionsClient. */
  readonly sessions: MachineSessions;
  readonly #client: HangarClient;

  constructor(client: HangarClient, app: string, record: WireMachine) {
    this.#client = client;
    this.app = app;
    this.id = record.id;
    this.record = record;
    this.files = new MachineFiles(client, app, record.id);
    this.sessions = new MachineSessions(client.sessions, app, record.id);
  }

  get state(): WireMachine['state'] {
    return this.record.state;
  }

  async refresh(opts?: CallOptions): Promise<this> {
    this.record = await this.#client.machines.get(this.app, this.id, opts);
    return this;
  }

  async start(opts?: CallOptions): Promise<this> {
    await this.#client.machines.start(this.app, this.id, opts);
    return this.refresh(opts);
  }

  async stop(opts?: CallOptions & { signal?: string; timeout?: string }): Promise<this> {
    const { signal, timeout, ...call } = opts ?? {};
    await this.#client.machines.stop(this.app, this.id, { ...(signal ? { signal } : {}), ...(timeout ? { timeout } : {}) }, call);
    return this.refresh(call);
  }

  async restart(opts?: CallOptions): Promise<this> {
    await this.#client.machines.restart(this.app, this.id, opts);
    return this.refresh(opts);
  }

  async update(req: UpdateMachineRequest, opts?: CallOptions): Promise<this> {
    this.record = await this.#client.machines.update(this.app, this.id, req, opts);
    return this;
  }

  async wait(state: WaitableState, opts?: CallOptions & { timeoutS?: number }): Promise<this> {
    await this.#client.machines.wait(this.app, this.id, state, opts);
    return this.refresh(opts);
  }

  /** Captures the disk (running or not) so it can be rolled back to: `restore(checkpoint.id)`. */
  async checkpoint(req: CreateCheckpointRequest = {}, opts?: CallOptions): Promise<Checkpoint> {
    return this.#client.checkpoints.create(this.app, this.id, req, opts);
  }

  async checkpoints(opts?: CallOptions): Promise<Checkpoint[]> {
    return this.#client.checkpoints.list(this.app, this.id, opts);
  }

  /** Rolls the disk back to a checkpoint (id or name); a started machine restarts on it. */
  async restore(checkpoint: string, opts?: CallOptions): Promise<this> {
    this.record = await this.#client.checkpoints.restore(this.app, this.id, checkpoint, opts);
    return this;
  }

  /** New machines, each with its own copy of this one's filesystem (now, or a checkpoint's). */
  async fork(req: ForkRequest = {}, opts?: CallOptions): Promise<Machine[]> {
    const { machines } = await this.#client.machines.fork(this.app, this.id, req, opts);
    return machines.map((m) => new Machine(this.#client, this.app, m));
  }

  async destroy(opts?: CallOptions & { force?: boolean }): Promise<void> {
    await this.#client.machines.destroy(this.app, this.id, opts);
  }

  /** Starts a command; iterate the handle for output as it comes, `wait()` for the result. */
  exec(command: string[], opts: ExecOptions = {}): ExecHandle {
    const { timeoutS, stdin, env, cwd, checkpoint, ...call } = opts;
    const body = {
      command, ...(timeoutS ? { timeout: timeoutS } : {}), ...(stdin !== undefined ? { stdin } : {}), ...(env ? { env } : {}), ...(cwd ? { cwd } : {}),
      ...(checkpoint ? { checkpoint: true } : {}),
    };
    return this.#client.machines.execStream(this.app, this.id, body, call);
  }

  /** An interactive command (a shell by default) with a terminal of the given size, as `hangar console` uses. */
  console(opts: Partial<Omit<ExecSessionStart, 'tty'>> = {}): ExecSession {
    return this.#client.machines.execSession(this.app, this.id, { ...opts, command: opts.command ?? ['sh'], tty: true });
  }

  /** The machine's processes, with the sockets each listens on. */
  async ps(opts?: CallOptions): Promise<ProcessStat[]> {
    return this.#client.machines.ps(this.app, this.id, opts);
  }

  /** Resource use now: CPU seconds, memory and processes (null unless it runs), disk and network bytes. */
  async metrics(opts?: CallOptions): Promise<MachineMetrics> {
    return this.#client.machines.metrics(this.app, this.id, opts);
  }

  async events(opts?: CallOptions): Promise<MachineEvent[]> {
    return this.#client.machines.events(this.app, this.id, opts);
  }

  /** Recent log lines; `logs.follow()` yields new ones until the signal aborts. */
  async logs(opts?: CallOptions & { tail?: number }): Promise<string[]> {
    return (await this.#client.machines.logs(this.app, this.id, opts)).lines;
  }

  followLogs(opts?: CallOptions & { tail?: number }): AsyncGenerator<string> {
    return this.#client.machines.followLogs(this.app, this.id, opts);
  }

  /** Recent egress events: names looked up, connections (bytes when they end), attempts refused. */
  async egress(opts?: CallOptions & { tail?: number }): Promise<EgressEvent[]> {
    return (await this.#client.machines.egress(this.app, this.id, opts)).events;
  }

  followEgress(opts?: CallOptions & { tail?: number }): AsyncGenerator<EgressEvent> {
    return this.#client.machines.followEgress(this.app, this.id, opts);
  }
}

/**
 * Files inside a machine, started or stopped. Paths are absolute paths as the machine sees them;
 * the daemon refuses any that would lead outside the machine (`..`, absolute symlinks, links that
 * climb out): HangarApiError with code path_escapes_root. Contents stream both ways.
 */
export class MachineFiles {
  readonly #client: HangarClient;
  readonly #base: string;
  readonly #app: string;
  readonly #id: string;

  constructor(client: HangarClient, app: string, id: string) {
    this.#client = client;
    this.#app = app;
    this.#id = id;
    this.#base = `${machinePath(app, id)}/files`;
  }

  async read(path: string, opts?: CallOptions & { range?: ByteRange }): Promise<Uint8Array> {
    return new Uint8Array(await (await this.#get(path, opts)).arrayBuffer());
  }

  async readText(path: string, opts?: CallOptions & { range?: ByteRange }): Promise<string> {
    return new TextDecoder().decode(await this.read(path, opts));
  }

  /** The file's bytes as they arrive, for files too big to hold. */
  async readStream(path: string, opts?: CallOptions & { range?: ByteRange }): Promise<ReadableStream<Uint8Array>> {
    return bodyOf(await this.#get(path, opts));
  }

  /** Writes a whole file (replacing it), creating parent directories. A new file gets mode 0644
   * unless `mode` is given; a replaced one keeps its mode. A stream is sent as it is read. */
  async write(
    path: string,
    content: string | Uint8Array | ReadableStream<Uint8Array>,
    opts?: CallOptions & { mode?: number },
  ): Promise<{ path: string; size: number; mode: number }> {
    const mode = opts?.mode !== undefined ? `&mode=${opts.mode.toString(8)}` : '';
    const res = await this.#client.raw('PUT', `${this.#base}?path=${encodeURIComponent(path)}${mode}`, undefined, {
      ...opts,
      rawBody: typeof content === 'string' ? new TextEncoder().encode(content) : content,
    });
    return (await res.json()) as { path: string; size: number; mode: number };
  }

  async list(path: string, opts?: CallOptions): Promise<FileEntry[]> {
    return (await this.#client.call<{ entries: FileEntry[] }>('GET', `${this.#base}/list?path=${encodeURIComponent(path)}`, undefined, opts)).entries;
  }

  /** One entry; a symlink is described (with link_target), not followed. */
  async stat(path: string, opts?: CallOptions): Promise<FileStat> {
    return this.#client.call<FileStat>('GET', `${this.#base}/stat?path=${encodeURIComponent(path)}`, undefined, opts);
  }

  async remove(path: string, opts?: CallOptions & { recursive?: boolean }): Promise<void> {
    await this.#client.call('DELETE', `${this.#base}?path=${encodeURIComponent(path)}${opts?.recursive ? '&recursive=true' : ''}`, undefined, opts);
  }

  /** Moves a file or directory; an existing `to` is replaced only with `overwrite` (else file_exists). */
  async rename(from: string, to: string, opts?: CallOptions & { overwrite?: boolean }): Promise<void> {
    await this.#client.call('POST', `${this.#base}/rename`, { from, to, overwrite: opts?.overwrite ?? false }, opts);
  }

  /** A directory as an (uncompressed) tar stream. */
  async downloadTar(path: string, opts?: CallOptions): Promise<ReadableStream<Uint8Array>> {
    const res = await this.#client.raw('GET', `${this.#base}/tar?path=${encodeURIComponent(path)}`, undefined, { ...opts, accept: 'application/x-tar' });
    return bodyOf(res);
  }

  /** Unpacks a tar archive into a directory (created if missing), merging with what is there. */
  async uploadTar(path: string, archive: Uint8Array | ReadableStream<Uint8Array>, opts?: CallOptions): Promise<{ path: string; members: number }> {
    const res = await this.#client.raw('PUT', `${this.#base}/tar?path=${encodeURIComponent(path)}`, undefined, {
      ...opts,
      rawBody: archive,
      contentType: 'application/x-tar',
    });
    return (await res.json()) as { path: string; members: number };
  }

  /**
   * Watches a directory of the (started) machine for files created, modified, deleted and renamed;
   * `recursive` takes in every directory below it. Resolves once watching, so what happens after
   * is seen; iterate it for changes, `close()` when done. It ends by itself when the machine stops.
   */
  async watch(path: string, opts?: CallOptions & { recursive?: boolean }): Promise<FileWatch> {
    return this.#client.machines.watchFiles(this.#app, this.#id, path, opts);
  }

  #get(path: string, opts?: CallOptions & { range?: ByteRange }): Promise<Response> {
    const { range, ...call } = opts ?? {};
    const raw: RawOptions = { ...call, accept: 'application/octet-stream' };
    if (range) raw.headers = { range: `bytes=${range.start}-${range.end ?? ''}` };
    return this.#client.raw('GET', `${this.#base}?path=${encodeURIComponent(path)}`, undefined, raw);
  }
}

function bodyOf(res: Response): ReadableStream<Uint8Array> {
  return res.body ?? new ReadableStream({ start: (c) => c.close() });
}

function machinePath(app: string, id: string): string {
  return `/v1/apps/${encodeURIComponent(app)}/machines/${encodeURIComponent(id)}`;
}
