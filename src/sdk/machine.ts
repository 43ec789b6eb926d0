import type { Machine as WireMachine, MachineEvent, ProcessStat, UpdateMachineRequest } from '../protocol/schemas.ts';
import type { WaitableState } from '../protocol/states.ts';
import type { CallOptions, HangarClient } from './client.ts';
import type { ExecHandle } from './exec-handle.ts';
import type { ExecSession, ExecSessionStart } from './exec-session.ts';

// A machine as a robot holds it: the last known record plus the verbs that act on it.

export type ExecOptions = CallOptions & { timeoutS?: number; stdin?: string; env?: Record<string, string>; cwd?: string };
export type FileEntry = { name: string; type: 'file' | 'dir' | 'symlink' | 'other'; size: number; mode: number; mtime: string; link_target?: string };

export class Machine {
  readonly app: string;
  readonly id: string;
  /** The record as of the last call that returned it; `refresh()` fetches it again. */
  record: WireMachine;
  readonly files: MachineFiles;
  readonly #client: HangarClient;

  constructor(client: HangarClient, app: string, record: WireMachine) {
    this.#client = client;
    this.app = app;
    this.id = record.id;
    this.record = record;
    this.files = new MachineFiles(client, app, record.id);
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

  async destroy(opts?: CallOptions & { force?: boolean }): Promise<void> {
    await this.#client.machines.destroy(this.app, this.id, opts);
  }

  /** Starts a command; iterate the handle for output as it comes, `wait()` for the result. */
  exec(command: string[], opts: ExecOptions = {}): ExecHandle {
    const { timeoutS, stdin, env, cwd, ...call } = opts;
    const body = { command, ...(timeoutS ? { timeout: timeoutS } : {}), ...(stdin !== undefined ? { stdin } : {}), ...(env ? { env } : {}), ...(cwd ? { cwd } : {}) };
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
}

/** Files inside a machine, started or stopped. Paths are absolute paths as the machine sees them. */
export class MachineFiles {
  readonly #client: HangarClient;
  readonly #base: string;

  constructor(client: HangarClient, app: string, id: string) {
    this.#client = client;
    this.#base = `${machinePath(app, id)}/files`;
  }

  async read(path: string, opts?: CallOptions): Promise<Uint8Array> {
    const res = await this.#client.raw('GET', `${this.#base}?path=${encodeURIComponent(path)}`, undefined, { ...opts, accept: 'application/octet-stream' });
    return new Uint8Array(await res.arrayBuffer());
  }

  async readText(path: string, opts?: CallOptions): Promise<string> {
    return new TextDecoder().decode(await this.read(path, opts));
  }

  async write(path: string, content: string | Uint8Array, opts?: CallOptions & { mode?: number }): Promise<{ path: string; size: number; mode: number }> {
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

  async remove(path: string, opts?: CallOptions & { recursive?: boolean }): Promise<void> {
    await this.#client.call('DELETE', `${this.#base}?path=${encodeURIComponent(path)}${opts?.recursive ? '&recursive=true' : ''}`, undefined, opts);
  }
}

function machinePath(app: string, id: string): string {
  return `/v1/apps/${encodeURIComponent(app)}/machines/${encodeURIComponent(id)}`;
}
