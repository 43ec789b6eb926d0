// The crun driver. Every crun call goes through the launcher (launcher-main.ts), one small
// long-lived process. Each machine runs under a small detached shell, the shim, that waits for
// crun and records the exit in the bundle, so machines outlive the daemon and the launcher, and a
// restarted daemon reads what happened from the bundle (see run-files.ts).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { access, constants as fsConstants, rm } from 'node:fs/promises';
import { constants, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import { watchBundle } from './bundle-watch.ts';
import { cgroup2MountOf, cgroupMoveWarmer } from './cgroup-warmup.ts';
import { type CrunCommand, detectCrunCommand, removeCgroup2Group } from './crun-command.ts';
import { crunExec, spawnExec, writeExecProcess } from './crun-exec.ts';
import { applyStartExtras, NO_EXTRAS } from './start-extras.ts';
import { applySeccompVariant, seccompVariantFor } from './bundle-seccomp.ts';
import type { Driver, ExecProcess, ExecRequest, ExecResult, ExecStreamRequest, ExitInfo, MachineSpec, RunState, SessionDriver, SessionSpawnRequest, StartTarget } from './driver.ts';
import { machineNofileLimit } from './host-limits.ts';
import { Launcher } from './launcher-client.ts';
import { KmsgOomLog } from './kmsg-oom.ts';
import { DEFAULT_CAPABILITIES } from './oci-defaults.ts';
import { buildOciSpec, cgroupsPathFor } from './oci-spec.ts';
import {
  isInCgroup,
  isShimOf,
  readExitFile,
  readPid,
  readShim,
  removeRunFiles,
  toExitInfo,
} from './run-files.ts';
import { compiledSeccomp } from './seccomp-bpf.ts';
import { isSessionShimOf, readSessionExit, readSessionPid, readSessionShim, SESSION_PROCESS_FILE } from './session-files.ts';
import { hardenSeccomp, type SeccompVariant } from './seccomp-harden.ts';
import { DEFAULT_SECCOMP_PATH, loadSeccomp } from './seccomp-profile.ts';

export type CrunDriverOptions = {
  /** crun's --root, e.g. `<dataDir>/crun`. */
  stateRoot: string;
  initPath?: string;
  seccompPath?: string;
  startTimeoutMs?: number;
};

// Both are fallbacks: inotify on the bundle dir reports the pid and exit files as they appear.
const START_POLL_MS = 20;
const EXIT_POLL_MS = 250;
const LOG_TAIL_BYTES = 4096;
const STATE_SETTLE_TRIES = 100;
/** Status reported when the shim vanished without recording an exit (killed, or the host rebooted). */
const LOST_EXIT_STATUS = 255;

const INSTALL_HINT = 'install the runtime packages: apt-get install crun tini util-linux containers-common daemontools';

export function createCrunDriver(opts: CrunDriverOptions): Driver {
  return new CrunDriver(opts);
}

const GROUP_RETRY_MS = [20, 100, 500, 2000, 10_000];

class CrunDriver implements Driver, SessionDriver {
  readonly name = 'crun';
  readonly #cmd: CrunCommand;
  readonly #launcher: Launcher;
  readonly #initPath: string;
  readonly #seccompPath: string;
  readonly #startTimeoutMs: number;
  readonly #nofile = machineNofileLimit();
  readonly #oom = new KmsgOomLog();
  /** Bundle of every machine this process has seen, so exec needs only the id. */
  readonly #bundles = new Map<string, string>();
  /** Each variant's compiled filter, base64. */
  readonly #seccomp = new Map<SeccompVariant, Promise<string>>();
  /** Machines whose v2 group was still busy at cleanup, and the timer that tries again. */
  readonly #groupRetries = new Map<string, NodeJS.Timeout>();
  readonly #warmCgroupMoves = cgroupMoveWarmer(cgroup2MountOf(readFileSync('/proc/self/mountinfo', 'utf8')));

  constructor(opts: CrunDriverOptions) {
    this.#cmd = detectCrunCommand(opts.stateRoot);
    // The data dir holds the state root, the launcher's socket and every mount a machine needs.
    const dataDir = dirname(opts.stateRoot);
    this.#launcher = new Launcher({
      stateRoot: opts.stateRoot,
      socketPath: join(dataDir, 'launcher.sock'),
      hiddenCgroup2: this.#cmd.hiddenCgroup2,
      sharedDir: dataDir,
    });
    this.#initPath = opts.initPath ?? '/usr/bin/tini-static';
    this.#seccompPath = opts.seccompPath ?? DEFAULT_SECCOMP_PATH;
    this.#startTimeoutMs = opts.startTimeoutMs ?? 15_000;
  }

  async checkHost(): Promise<void> {
    if (process.getuid?.() !== 0) {
      throw new HangarError('host_unsupported', 'the crun driver needs root', { hint: 'run the daemon as root' });
    }
    const tools = this.#cmd.hiddenCgroup2.length > 0 ? ['crun', 'unshare', 'umount'] : ['crun'];
    for (const tool of tools) {
      const ok = await new Promise<boolean>((resolve) => {
        const child = spawn(tool, ['--version'], { stdio: 'ignore' });
        child.on('error', () => resolve(false));
        child.on('close', (code) => resolve(code === 0));
      });
      if (!ok) throw new HangarError('host_unsupported', `${tool} is not installed or does not run`, { hint: INSTALL_HINT });
    }
    await access(this.#initPath, fsConstants.X_OK).catch((err) => {
      throw new HangarError('host_unsupported', `no static tini at ${this.#initPath}`, { hint: INSTALL_HINT, cause: err });
    });
    // multilog has no --version; it is found on PATH as the shim finds it.
    const onPath = await Promise.all((process.env.PATH ?? '').split(':').map((dir) => access(join(dir || '.', 'multilog'), fsConstants.X_OK).then(() => true, () => false)));
    if (!onPath.includes(true)) throw new HangarError('host_unsupported', 'multilog (daemontools) is not installed; machine logs go through it', { hint: INSTALL_HINT });
    await this.#launcher.pid();
    // Both now, so no start waits for a compile.
    await Promise.all([this.#seccompBpf('default'), this.#seccompBpf('nested-namespaces')]);
  }

  /** A filter for the machines: the host's profile for their capabilities, hardened, compiled once per variant. */
  #seccompBpf(variant: SeccompVariant): Promise<string> {
    let bpf = this.#seccomp.get(variant);
    if (!bpf) {
      bpf = loadSeccomp(DEFAULT_CAPABILITIES, this.#seccompPath).then((profile) =>
        compiledSeccomp(this.#launcher, this.#cmd.stateRoot, hardenSeccomp(profile, variant), join(dirname(this.#cmd.stateRoot), 'seccomp')),
      );
      this.#seccomp.set(variant, bpf);
      bpf.catch(() => this.#seccomp.delete(variant));
    }
    return bpf;
  }

  async prepare(spec: MachineSpec): Promise<void> {
    const seccompBpf = await this.#seccompBpf(seccompVariantFor(spec.nestedNamespaces, spec.idRange !== undefined));
    const config = buildOciSpec(spec, { seccompBpf, initHostPath: this.#initPath, hostMemoryBytes: totalmem(), nofileLimit: this.#nofile });
    // Synchronous: a few KB into the page cache and a rename take microseconds, where each trip
    // through the thread pool costs a turn of the loop (milliseconds on a busy host).
    mkdirSync(spec.bundleDir, { recursive: true });
    mkdirSync(dirname(spec.logPath), { recursive: true });
    const tmp = join(spec.bundleDir, 'config.json.tmp');
    writeFileSync(tmp, JSON.stringify(config));
    renameSync(tmp, join(spec.bundleDir, 'config.json'));
    this.#bundles.set(spec.id, spec.bundleDir);
  }

  async start(id: string, where: StartTarget): Promise<{ pid: number }> {
    // The group is the new run's now.
    clearTimeout(this.#groupRetries.get(id));
    this.#groupRetries.delete(id);
    this.#warmCgroupMoves();
    const { bundleDir, logPath } = where;
    this.#bundles.set(id, bundleDir);
    await applyStartExtras(bundleDir, where.extras ?? NO_EXTRAS);
    await applySeccompVariant(bundleDir, where.nestedNamespaces ?? false, (variant) => this.#seccompBpf(variant));
    await removeRunFiles(bundleDir);
    const logStart = logSize(logPath);
    let shimPid: number | undefined;
    const outcome = await new Promise<{ pid: number } | { exit: number } | { error: Error }>((resolve) => {
      const timer = setTimeout(() => {
        stop();
        resolve({ error: new Error(`no pid after ${this.#startTimeoutMs} ms`) });
      }, this.#startTimeoutMs);
      this.#launcher.start({ op: 'start', id, bundleDir, logPath, cgroupPath: cgroupsPathFor(id) }).then(
        (pid) => (shimPid = pid),
        (error: Error) => {
          stop();
          clearTimeout(timer);
          resolve({ error });
        },
      );
      const stop = watchBundle(
        bundleDir,
        () => {
          const pid = readPid(bundleDir);
          if (pid !== undefined) return { pid };
          const exit = readExitFile(bundleDir);
          return exit && { exit: exit.status };
        },
        (result) => {
          clearTimeout(timer);
          resolve(result);
        },
        START_POLL_MS,
      );
    });
    if ('pid' in outcome) return outcome;
    if ('error' in outcome) {
      // A launcher that died after spawning the shim never said its pid; the shim file does.
      const shim = shimPid ?? readShim(bundleDir)?.pid;
      if (shim && isShimOf(shim, bundleDir)) tryKill(-shim);
    }
    const log = readTail(logPath, logStart);
    const why = 'exit' in outcome ? `crun exited with status ${outcome.exit}` : outcome.error.message;
    throw new HangarError('runtime_error', `machine ${id} failed to start: ${why}${log ? `: ${log.trim().split('\n').at(-1)}` : ''}`, {
      hint: 'read the machine log for the full output; fix the command or image config and start it again',
      details: { log },
    });
  }

  async state(id: string, where: { bundleDir: string }): Promise<RunState> {
    const { bundleDir } = where;
    this.#bundles.set(id, bundleDir);
    for (let attempt = 0; ; attempt++) {
      const exit = this.#currentExit(id, bundleDir);
      if (exit) return { status: 'exited', exit };
      const pid = readPid(bundleDir);
      if (pid !== undefined && isInCgroup(pid, cgroupsPathFor(id))) return { status: 'running', pid };
      const shim = readShim(bundleDir);
      // A live shim without a running init is between starting and crun writing the pid, or between
      // the init ending and the exit being recorded: an answer is milliseconds away.
      if (!shim || !isShimOf(shim.pid, bundleDir) || attempt >= STATE_SETTLE_TRIES) return { status: 'absent' };
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  watchExit(id: string, where: { bundleDir: string }, onExit: (exit: ExitInfo) => void): () => void {
    this.#bundles.set(id, where.bundleDir);
    return watchBundle(where.bundleDir, () => this.#currentExit(id, where.bundleDir), onExit, EXIT_POLL_MS);
  }

  async kill(id: string, signal: string): Promise<void> {
    const name = signal.toUpperCase().startsWith('SIG') ? signal.toUpperCase() : `SIG${signal.toUpperCase()}`;
    if (!(name in constants.signals)) {
      throw new HangarError('validation_failed', `unknown signal ${signal}`, { hint: 'use a signal name such as SIGTERM, SIGINT or SIGKILL' });
    }
    // What `crun kill` does for a running machine is kill(2) on its init; done here, that costs no
    // process at all. The init is known by its cgroup, so a reused pid is never signalled.
    const bundleDir = this.#bundles.get(id);
    const pid = bundleDir === undefined ? undefined : readPid(bundleDir);
    if (pid !== undefined && isInCgroup(pid, cgroupsPathFor(id))) {
      try {
        process.kill(pid, name as NodeJS.Signals);
        return;
      } catch {
        // it ended just now: crun says so below
      }
    }
    const res = await this.#launcher.run({ op: 'kill', id, signal: name });
    if (res.code !== 0) {
      throw new HangarError('runtime_error', `crun kill ${id} failed: ${res.stderr.trim()}`, {
        hint: 'the machine has probably exited already; check its state',
      });
    }
  }

  async exec(id: string, request: ExecRequest): Promise<ExecResult> {
    this.#warmCgroupMoves();
    return crunExec(this.#launcher, id, await this.#runningBundle(id), request);
  }

  async execStream(id: string, request: ExecStreamRequest): Promise<ExecProcess> {
    this.#warmCgroupMoves();
    return spawnExec(this.#launcher, id, await this.#runningBundle(id), request);
  }

  async startSession(id: string, req: SessionSpawnRequest): Promise<{ pid: number } | { exited: true }> {
    if (req.command.length === 0) throw new HangarError('validation_failed', 'a session needs a command', { hint: 'pass command: ["sh", "-c", "..."]' });
    const bundleDir = await this.#runningBundle(id);
    const processFile = join(req.dir, SESSION_PROCESS_FILE);
    writeExecProcess(bundleDir, processFile, req);
    let shimPid: number | undefined;
    const outcome = await new Promise<{ pid: number } | { exited: true } | { error: Error }>((resolve) => {
      const timer = setTimeout(() => {
        stop();
        resolve({ error: new Error(`the command did not start within ${this.#startTimeoutMs} ms`) });
      }, this.#startTimeoutMs);
      const stop = watchBundle(
        req.dir,
        () => {
          const pid = readSessionPid(req.dir);
          if (pid !== undefined) return { pid };
          return readSessionExit(req.dir) ? ({ exited: true } as const) : undefined;
        },
        (result) => {
          clearTimeout(timer);
          resolve(result);
        },
        START_POLL_MS,
      );
      this.#launcher.start({ op: 'session', id, dir: req.dir, cgroupPath: cgroupsPathFor(id), stdin: req.stdin, ...(req.tty ? { tty: req.tty } : {}) }).then(
        (pid) => (shimPid = pid),
        (error: Error) => {
          stop();
          clearTimeout(timer);
          resolve({ error });
        },
      );
    });
    // crun has read it once the command runs (or has failed); env values must not linger on disk.
    await rm(processFile, { force: true });
    if (!('error' in outcome)) return outcome;
    const shim = shimPid ?? readSessionShim(req.dir);
    if (shim && isSessionShimOf(shim, req.dir)) tryKill(-shim);
    throw new HangarError('runtime_error', `the session did not start in machine ${id}: ${outcome.error.message}`, {
      hint: 'check the machine is running (its state, its logs) and start the session again',
    });
  }

  async processes(id: string): Promise<number[]> {
    await this.#runningBundle(id);
    const res = await this.#launcher.run({ op: 'ps', id });
    if (res.code !== 0) {
      throw new HangarError('runtime_error', `crun ps ${id} failed: ${res.stderr.trim()}`, { hint: 'the machine has probably exited; check its state' });
    }
    return JSON.parse(res.stdout) as number[];
  }

  async #runningBundle(id: string): Promise<string> {
    const bundleDir = this.#bundles.get(id) ?? (await this.#bundleFromCrun(id));
    const pid = readPid(bundleDir);
    if (pid === undefined || !isInCgroup(pid, cgroupsPathFor(id)) || readExitFile(bundleDir)) {
      throw new HangarError('runtime_error', `machine ${id} is not running`, { hint: 'start the machine before exec' });
    }
    return bundleDir;
  }

  async cleanup(id: string, where: { bundleDir: string }): Promise<void> {
    const { bundleDir } = where;
    if (existsSync(join(this.#cmd.stateRoot, id))) {
      const res = await this.#launcher.run({ op: 'delete', id });
      if (res.code !== 0 && existsSync(join(this.#cmd.stateRoot, id))) {
        throw new HangarError('runtime_error', `crun delete ${id} failed: ${res.stderr.trim()}`, {
          hint: 'retry; if it keeps failing, inspect `crun list` on the host',
        });
      }
    }
    // A shim still running would write its exit file after we removed it; let it finish first.
    const shim = readShim(bundleDir);
    // It has little left to do once the exit is recorded: look often.
    for (let i = 0; shim && i < 2500 && isShimOf(shim.pid, bundleDir); i++) await new Promise((r) => setTimeout(r, 2));
    await removeRunFiles(bundleDir);
    this.#removeGroup(id, 0);
    this.#oom.forget(cgroupsPathFor(id));
    this.#bundles.delete(id);
  }

  /**
   * Removes the machine's v2 group, again a little later while its last processes are still
   * leaving: an empty group left behind makes every later cgroup operation on the host slower.
   */
  #removeGroup(id: string, attempt: number): void {
    this.#groupRetries.delete(id);
    if (removeCgroup2Group(this.#cmd, cgroupsPathFor(id)) || attempt >= GROUP_RETRY_MS.length) return;
    this.#groupRetries.set(id, setTimeout(() => this.#removeGroup(id, attempt + 1), GROUP_RETRY_MS[attempt]).unref());
  }

  /** The exit of the last run, if it has ended. */
  #currentExit(id: string, bundleDir: string): ExitInfo | undefined {
    const raw = readExitFile(bundleDir);
    const shim = readShim(bundleDir);
    if (raw) {
      const oom = raw.status === 128 + constants.signals.SIGKILL && this.#oom.sawOomKill(cgroupsPathFor(id), (shim?.startedAtSec ?? 0) - 0.01);
      return toExitInfo(raw, oom);
    }
    if (!shim || isShimOf(shim.pid, bundleDir)) return undefined;
    const pid = readPid(bundleDir);
    if (pid !== undefined && isInCgroup(pid, cgroupsPathFor(id))) return undefined;
    // The shim writes the exit before it ends; read again in case it did so just now.
    const late = readExitFile(bundleDir);
    return late ? toExitInfo(late, false) : toExitInfo({ status: LOST_EXIT_STATUS, at: new Date() }, false);
  }

  async #bundleFromCrun(id: string): Promise<string> {
    const res = await this.#launcher.run({ op: 'state', id });
    const bundle = res.code === 0 ? (JSON.parse(res.stdout) as { bundle?: string }).bundle : undefined;
    if (!bundle) throw new HangarError('machine_not_found', `the runtime has no machine ${id}`, { hint: 'start the machine first' });
    this.#bundles.set(id, bundle);
    return bundle;
  }
}

function logSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0; // the launcher makes it
  }
}

function readTail(path: string, from: number): string {
  try {
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      const start = Math.max(from, size - LOG_TAIL_BYTES);
      const buf = Buffer.alloc(Math.max(0, size - start));
      readSync(fd, buf, 0, buf.length, start);
      return buf.toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

function tryKill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
