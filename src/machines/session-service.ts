import { randomBytes } from 'node:crypto';
import { constants as fsConstants, openSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import { constants } from 'node:os';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import type { Session, SessionOutputEvent } from '../protocol/sessions.ts';
import { watchBundle } from '../runtime/bundle-watch.ts';
import { processGroupOf, resizeMachinePty } from '../runtime/crun-exec.ts';
import { canRunSessions, type Driver } from '../runtime/driver.ts';
import { readSessionPid, SESSION_PROCESS_FILE, SESSION_STDIN_FILE, sessionRunState, type SessionRunState } from '../runtime/session-files.ts';
import { followOutput, outputWindow, readOutput } from '../runtime/session-output.ts';
import type { MachinePaths } from './machine-paths.ts';
import type { MachineService } from './machine-service.ts';
import { encodePieces, type Encoding } from './session-events.ts';
import type { SessionEndReason, SessionRecord } from './session-store.ts';
import type { MachineRecord, Store } from './store.ts';
import { assertLegal } from './transitions.ts';

// Sessions: commands started in a running machine that outlive the connection that started them
// and the daemon itself (runtime/session-files.ts). Each is recorded in SQLite before it starts,
// watched while it runs (inotify on its directory, and a poll), and recorded as ended, with its
// exit code and why, once its shim has written the exit, or it turns out to have vanished. A
// restarted daemon calls reconcile() and picks up watching where the last one left off.
//
// Activity: start, output reads, attaches and input call `onActivity(machineId)` (one hook for an
// idle tracker), and `runningOn(machineId)` says whether any session still runs there.

/** Ended sessions kept per machine, with their output; older ones are forgotten. */
const ENDED_KEPT = 20;
const WATCH_POLL_MS = 500;
const KILL_WAIT_MS = 5_000;
const INPUT_TIMEOUT_MS = 10_000;
const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]));

export type StartSessionInput = {
  command: string[];
  tty?: boolean;
  rows?: number;
  cols?: number;
  stdin?: boolean;
  env?: Record<string, string>;
  cwd?: string;
  name?: string;
};

export type OutputRequest = { offset?: number; tailBytes?: number; maxBytes?: number; follow: boolean; encoding: Encoding };

export class SessionService {
  readonly #store: Store;
  readonly #machines: MachineService;
  readonly #driver: Driver;
  readonly #paths: MachinePaths;
  readonly #onActivity: (machineId: string) => void;
  readonly #watching = new Map<string, () => void>();
  readonly #endWaiters = new Map<string, Array<() => void>>();
  readonly #stdin = new Map<string, Socket>();

  constructor(deps: { store: Store; machines: MachineService; driver: Driver; paths: MachinePaths; onActivity?: (machineId: string) => void }) {
    this.#store = deps.store;
    this.#machines = deps.machines;
    this.#driver = deps.driver;
    this.#paths = deps.paths;
    this.#onActivity = deps.onActivity ?? (() => {});
  }

  async start(app: string, machineId: string, input: StartSessionInput): Promise<Session> {
    const m = this.#machines.get(app, machineId);
    assertLegal('exec', m.state, m.id);
    const driver = this.#driver;
    if (!canRunSessions(driver)) {
      throw new HangarError('host_unsupported', `the ${driver.name} driver cannot run sessions`, { hint: 'use exec (POST …/exec/stream) instead' });
    }
    if (input.name && this.#store.sessions.findByName(m.id, input.name)?.state === 'running') {
      throw new HangarError('session_name_taken', `machine ${m.id} already runs a session named ${input.name}`, {
        hint: 'choose another name, kill that session first, or leave name out',
      });
    }
    this.#onActivity(m.id);
    const id = `ses_${randomBytes(6).toString('hex')}`;
    const dir = this.#dir(m.id, id);
    const machinePid = await this.#machinePid(m);
    const tty = input.tty ?? false;
    const record: SessionRecord = {
      id, machineId: m.id, name: input.name ?? id, command: input.command, tty, stdin: tty || (input.stdin ?? false),
      cwd: input.cwd ?? null, createdAt: new Date().toISOString(), state: 'running', endedAt: null, exitCode: null,
      endReason: null, killedWith: null, machinePid: machinePid ?? null,
    };
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Recorded before it starts: a daemon that dies in between finds it, and records it as lost.
    this.#store.sessions.insert(record);
    let started: { pid: number } | { exited: true };
    try {
      started = await driver.startSession(m.id, {
        dir,
        command: input.command,
        stdin: record.stdin,
        ...(input.env ? { env: Object.entries(input.env).map(([k, v]) => `${k}=${v}`) } : {}),
        ...(input.cwd ? { cwd: input.cwd } : {}),
        ...(tty ? { tty: { rows: input.rows ?? 24, cols: input.cols ?? 80 } } : {}),
      });
    } catch (err) {
      this.#store.sessions.delete(id);
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    this.#watch(record);
    // One that failed at once (no such program...) answers as ended, with crun's words in its output.
    if ('exited' in started) await this.#waitRecorded(id);
    await this.#forgetOld(m.id);
    return this.#view(this.#store.sessions.get(id)!);
  }

  async list(app: string, machineId: string): Promise<Session[]> {
    const m = this.#machines.get(app, machineId, { includeDestroyed: true });
    return Promise.all(this.#store.sessions.list(m.id).map((s) => this.#view(s)));
  }

  async get(app: string, machineId: string, sessionId: string): Promise<Session> {
    return this.#view(this.#find(app, machineId, sessionId).s);
  }

  /**
   * Output events from the requested offset; the last is an `end` event (with follow: once the
   * session has ended). Checks the request first, so a bad one throws before any event.
   */
  async output(app: string, machineId: string, sessionId: string, req: OutputRequest, signal: AbortSignal): Promise<AsyncGenerator<SessionOutputEvent>> {
    const { s } = this.#find(app, machineId, sessionId);
    this.#onActivity(s.machineId);
    const dir = this.#dir(s.machineId, s.id);
    const window = await outputWindow(dir);
    const from = req.offset ?? (req.tailBytes !== undefined ? Math.max(window.start, window.end - req.tailBytes) : window.start);
    if (from > window.end) {
      throw new HangarError('validation_failed', `offset ${from} is past the end of the output (${window.end} bytes so far)`, {
        hint: `read from an offset up to ${window.end}, or follow from ${window.end} to wait for new output`,
        details: { end: window.end },
      });
    }
    return this.#events(s, dir, from, req, signal);
  }

  async *#events(s: SessionRecord, dir: string, from: number, req: OutputRequest, signal: AbortSignal): AsyncGenerator<SessionOutputEvent> {
    const ended = () => sessionRunState(dir).status !== 'running';
    const next = { offset: from };
    if (req.follow) {
      // Known before the read: once true, all output is on disk, so what follows is the last of it.
      let over = false;
      const pieces = followOutput(dir, from, () => (over = ended()), signal);
      for await (const event of encodePieces(pieces, req.encoding, () => over, next)) {
        this.#onActivity(s.machineId);
        yield event;
      }
      if (signal.aborted) return;
      await this.#waitRecorded(s.id);
    } else {
      const over = ended();
      yield* encodePieces(readOutput(dir, from, req.maxBytes), req.encoding, () => over && req.maxBytes === undefined, next);
    }
    yield { type: 'end', offset: next.offset, session: await this.#view(this.#store.sessions.get(s.id)!) };
  }

  /** Sends a signal (default SIGKILL) to the command and its process group; answers once it ended (or after a few seconds). */
  async kill(app: string, machineId: string, sessionId: string, signal = 'SIGKILL'): Promise<Session> {
    const { s } = this.#find(app, machineId, sessionId);
    this.#onActivity(s.machineId);
    if (s.state !== 'running') return this.#view(s);
    const pid = readSessionPid(this.#dir(s.machineId, s.id));
    if (pid === undefined) {
      throw new HangarError('session_ended', `session ${s.id} has no running command to signal`, { hint: 'list the sessions to see how it ended' });
    }
    this.#store.sessions.markKilled(s.id, signal);
    // crun puts the command in a session of its own; its group takes its children too.
    const pgrp = processGroupOf(pid);
    if (pgrp !== undefined && pgrp > 1 && pgrp !== process.pid) trySignal(-pgrp, signal);
    trySignal(pid, signal);
    await Promise.race([this.#waitRecorded(s.id), new Promise((r) => setTimeout(r, KILL_WAIT_MS))]);
    return this.#view(this.#store.sessions.get(s.id)!);
  }

  /** Writes to the command's stdin; resolves once the bytes are in its pipe. */
  async write(app: string, machineId: string, sessionId: string, data: Buffer): Promise<void> {
    const { s } = this.#find(app, machineId, sessionId);
    this.#onActivity(s.machineId);
    if (!s.stdin) throw new HangarError('validation_failed', `session ${s.id} was started without stdin`, { hint: 'start it with stdin: true (or tty: true) to write to it' });
    if (s.state !== 'running') throw new HangarError('session_ended', `session ${s.id} has ended`, { hint: 'start a new session' });
    const sock = this.#stdinOf(s);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new HangarError('session_ended', `session ${s.id} is not reading its stdin`, {
        hint: 'its stdin pipe is full: the command is not reading it; check its output',
      })), INPUT_TIMEOUT_MS);
      sock.write(data, (err) => {
        clearTimeout(timer);
        if (err) reject(new HangarError('session_ended', `session ${s.id}'s stdin is closed: ${err.message}`, { hint: 'the command has probably ended; get the session' }));
        else resolve();
      });
    });
  }

  async resize(app: string, machineId: string, sessionId: string, rows: number, cols: number): Promise<void> {
    const { s } = this.#find(app, machineId, sessionId);
    if (!s.tty) throw new HangarError('validation_failed', `session ${s.id} has no terminal to resize`, { hint: 'resize applies to sessions started with tty: true' });
    const pid = readSessionPid(this.#dir(s.machineId, s.id));
    if (s.state === 'running' && pid !== undefined) await resizeMachinePty(pid, rows, cols);
  }

  /** Whether any session still runs in the machine (for an idle tracker). */
  runningOn(machineId: string): boolean {
    return this.#store.sessions.running().some((s) => s.machineId === machineId);
  }

  /** After a daemon (re)start: watch every session recorded as running; those that ended meanwhile are recorded now. */
  reconcile(): { running: string[]; ended: string[] } {
    const report = { running: [] as string[], ended: [] as string[] };
    for (const s of this.#store.sessions.running()) {
      const state = sessionRunState(this.#dir(s.machineId, s.id));
      (state.status === 'running' ? report.running : report.ended).push(s.id);
      this.#watch(s);
    }
    return report;
  }

  /** Stops watching (the daemon is closing); the sessions keep running. */
  close(): void {
    for (const stop of this.#watching.values()) stop();
    this.#watching.clear();
    for (const sock of this.#stdin.values()) sock.destroy();
    this.#stdin.clear();
  }

  #find(app: string, machineId: string, sessionId: string): { m: MachineRecord; s: SessionRecord } {
    const m = this.#machines.get(app, machineId, { includeDestroyed: true });
    const s = this.#store.sessions.get(sessionId) ?? this.#store.sessions.findByName(m.id, sessionId);
    if (!s || s.machineId !== m.id) {
      throw new HangarError('session_not_found', `machine ${m.id} has no session ${sessionId}`, {
        hint: `list its sessions: GET /v1/apps/${app}/machines/${m.id}/sessions`,
        details: { machine_id: m.id, session_id: sessionId },
      });
    }
    return { m, s };
  }

  #dir(machineId: string, sessionId: string): string {
    return join(this.#paths.dir(machineId), 'sessions', sessionId);
  }

  async #machinePid(m: MachineRecord): Promise<number | undefined> {
    const state = await this.#driver.state(m.id, { bundleDir: this.#paths.bundle(m.id) }).catch(() => undefined);
    return state?.status === 'running' ? state.pid : undefined;
  }

  #watch(s: SessionRecord): void {
    if (this.#watching.has(s.id)) return;
    const dir = this.#dir(s.machineId, s.id);
    const stop = watchBundle(
      dir,
      () => {
        const state = sessionRunState(dir);
        return state.status === 'running' ? undefined : state;
      },
      (state) => {
        this.#watching.delete(s.id);
        void this.#recordEnd(s, state);
      },
      WATCH_POLL_MS,
    );
    this.#watching.set(s.id, stop);
  }

  async #recordEnd(s: SessionRecord, state: Exclude<SessionRunState, { status: 'running' }>): Promise<void> {
    const now = this.#store.sessions.get(s.id);
    if (!now || now.state !== 'running') return;
    const m = this.#store.getMachine(s.machineId);
    const machineRan = m !== undefined && m.state === 'started' && (await this.#machinePid(m)) === (s.machinePid ?? undefined);
    const reason: SessionEndReason = now.killedWith ? 'killed' : !machineRan ? 'machine_stopped' : state.status === 'lost' ? 'lost' : 'exited';
    this.#store.sessions.markEnded(s.id, {
      endedAt: (state.status === 'exited' ? state.at : new Date()).toISOString(),
      exitCode: state.status === 'exited' ? state.exitCode : null,
      endReason: reason,
    });
    this.#stdin.get(s.id)?.destroy();
    this.#stdin.delete(s.id);
    await rm(join(this.#dir(s.machineId, s.id), SESSION_PROCESS_FILE), { force: true }).catch(() => undefined);
    for (const wake of this.#endWaiters.get(s.id) ?? []) wake();
    this.#endWaiters.delete(s.id);
  }

  /** Resolves once the session's end is in the store. */
  #waitRecorded(id: string): Promise<void> {
    if (this.#store.sessions.get(id)?.state !== 'running') return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.#endWaiters.get(id) ?? [];
      list.push(resolve);
      this.#endWaiters.set(id, list);
    });
  }

  /** The stdin FIFO's write end, opened once per session without blocking (a pipe socket gives backpressure). */
  #stdinOf(s: SessionRecord): Socket {
    const open = this.#stdin.get(s.id);
    if (open && !open.destroyed) return open;
    let fd: number;
    try {
      fd = openSync(join(this.#dir(s.machineId, s.id), SESSION_STDIN_FILE), fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    } catch (err) {
      throw new HangarError('session_ended', `session ${s.id}'s stdin cannot be opened: ${(err as Error).message}`, { hint: 'the session has probably ended; get it to see how', cause: err });
    }
    const sock = new Socket({ fd, readable: false, writable: true });
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      if (this.#stdin.get(s.id) === sock) this.#stdin.delete(s.id);
    });
    this.#stdin.set(s.id, sock);
    return sock;
  }

  async #forgetOld(machineId: string): Promise<void> {
    for (const old of this.#store.sessions.endedBeyond(machineId, ENDED_KEPT)) {
      await rm(this.#dir(machineId, old.id), { recursive: true, force: true });
      this.#store.sessions.delete(old.id);
    }
  }

  async #view(s: SessionRecord): Promise<Session> {
    const window = await outputWindow(this.#dir(s.machineId, s.id));
    const signal = s.exitCode !== null && s.exitCode > 128 ? SIGNAL_NAMES.get(s.exitCode - 128) : undefined;
    return {
      id: s.id,
      machine_id: s.machineId,
      name: s.name,
      command: s.command,
      tty: s.tty,
      stdin: s.stdin,
      state: s.state,
      created_at: s.createdAt,
      ended_at: s.endedAt,
      exit_code: s.exitCode,
      ...(signal ? { signal } : {}),
      end_reason: s.endReason,
      output: window,
    };
  }
}

function trySignal(pid: number, signal: string): void {
  try {
    process.kill(pid, signal as NodeJS.Signals);
  } catch {
    // already gone
  }
}
