// The contract every machine runtime implements. crun is the first; a microVM driver may follow.
//
// A machine's life as a driver sees it:
//   const spec = { id, rootfs: '/data/machines/ab12/rootfs', bundleDir, logPath, process, limits }
//   await driver.prepare(spec)           // writes the bundle; slow path, once per config
//   const { pid } = await driver.start(spec.id, { bundleDir, logPath, nestedNamespaces })  // fast path
//   driver.watchExit(id, (exit) => ...)  // fires once when the machine's init ends
//   await driver.exec(id, { command: ['ls', '/'], timeoutMs: 5000 })
//   await driver.kill(id, 'SIGTERM')     // exit is reported through watchExit
//   await driver.cleanup(id)             // after exit: drops runtime state, keeps the rootfs
// After a daemon restart, `state(id)` tells whether a machine still runs and `watchExit` adopts it.

import type { Readable, Writable } from 'node:stream';
import type { StartExtras } from './start-extras.ts';

export type ProcessSpec = {
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids?: number[];
};

export type MachineLimits = {
  cpus?: number;
  memoryMb?: number;
  pidsLimit?: number;
};

export type MachineSpec = {
  id: string;
  hostname: string;
  /** A network namespace to join (kept across runs); without it the machine gets a fresh one. */
  netnsPath?: string;
  /** The image's StopSignal; kept in the bundle as the OCI annotation, so a stop finds it. */
  stopSignal?: string;
  /** Bound over the machine's /etc/resolv.conf, so its image's copy is left as it is. */
  resolvConfPath?: string;
  /** Mounted root filesystem (the overlay). */
  rootfs: string;
  /** Directory for config.json and runtime files of this machine. */
  bundleDir: string;
  /** `<a log directory of this machine's own>/current`: stdout and stderr of the machine, capped as
   * they are written; the rotated files sit beside it. */
  logPath: string;
  process: ProcessSpec;
  limits: MachineLimits;
  /** Host directories (mounted volumes) bound into the machine, nodev and nosuid. Their files keep
   * unshifted ids: with idRange, the bind is idmapped into the machine's range, so 0 is its root. */
  volumes?: Array<{ source: string; destination: string }>;
  /** The machine's own user namespace maps ids 0..size-1 inside to base.. on the host; absent for
   * machines made before machines had one. The rootfs must already show its files in this range. */
  idRange?: { base: number; size: number };
  /** Lets the machine make namespaces of its own and mount in them (its app's nested_namespaces);
   * honoured only with idRange. start() is told again, so a change applies at the next start. */
  nestedNamespaces?: boolean;
};

/** Where a prepared machine's bundle and log are, and what its app now allows it (see MachineSpec);
 * `extras`: env and read-only binds its app gives it at this start (start-extras.ts). */
export type StartTarget = { bundleDir: string; logPath: string; nestedNamespaces?: boolean; extras?: StartExtras };

export type ExitInfo = {
  /** Exit code of the machine's init; 128+N when killed by signal N. */
  exitCode: number;
  /** Set when the init was killed by a signal. */
  signal?: string;
  oomKilled: boolean;
  exitedAt: Date;
};

export type RunState = { status: 'running'; pid: number } | { status: 'exited'; exit: ExitInfo } | { status: 'absent' };

export type ExecRequest = {
  command: string[];
  env?: string[];
  cwd?: string;
  uid?: number;
  gid?: number;
  stdin?: string | Buffer;
  /** Buffered exec only: the most output kept, stdout and stderr together (their heads and tails). */
  maxOutputBytes?: number;
  timeoutMs: number;
  signal?: AbortSignal;
};

/** An exec whose output is read as it comes. `tty` gives the command a terminal of that size;
 * its output (stdout and stderr alike) then arrives on `stdout`. */
export type ExecStreamRequest = Omit<ExecRequest, 'stdin' | 'maxOutputBytes'> & { tty?: { rows: number; cols: number } };

export type ExecExit = {
  exitCode: number;
  exitSignal?: number;
  /** Killed at its timeout. */
  timedOut: boolean;
  /** Killed because the caller aborted. */
  cancelled: boolean;
};

export interface ExecProcess {
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly stdin: Writable;
  /** Resizes the terminal of a `tty` exec (the command gets SIGWINCH). */
  resize(rows: number, cols: number): Promise<void>;
  /** Resolves once the command has ended and its output has been read; never rejects. */
  readonly exit: Promise<ExecExit>;
}

export type ExecResult = {
  exitCode: number;
  exitSignal?: number;
  /** As UTF-8 text; when it outgrew the budget, its head and tail with the gap marked. */
  stdout: string;
  stderr: string;
  /** Bytes left out of the middle of each stream. */
  stdoutDroppedBytes: number;
  stderrDroppedBytes: number;
  timedOut: boolean;
};

/** A session: a command in a running machine that outlives the daemon (session-files.ts). Its
 * output, pid and exit go to files in `dir`, which must exist and be empty. */
export type SessionSpawnRequest = {
  dir: string;
  command: string[];
  env?: string[];
  cwd?: string;
  tty?: { rows: number; cols: number };
  /** Give it a stdin FIFO to write to (always so with a tty); else its stdin is /dev/null. */
  stdin: boolean;
};

/** An optional ability of a driver: running sessions. Callers check with `canRunSessions`. */
export interface SessionDriver {
  /** Starts the command under a detached shim; resolves once it runs, or once it has already ended. */
  startSession(id: string, request: SessionSpawnRequest): Promise<{ pid: number } | { exited: true }>;
}

export function canRunSessions(driver: Driver): driver is Driver & SessionDriver {
  return typeof (driver as Partial<SessionDriver>).startSession === 'function';
}

export interface Driver {
  readonly name: string;
  /** Checks the host can run machines; throws HangarError('host_unsupported') with a hint if not. */
  checkHost(): Promise<void>;
  /** Writes the runtime bundle for spec. Called at create and after a config update. */
  prepare(spec: MachineSpec): Promise<void>;
  /** Starts the prepared machine; resolves once its init process is running. */
  start(id: string, where: StartTarget): Promise<{ pid: number }>;
  /** Where the machine stands now, from the runtime's own records (survives daemon restarts). */
  state(id: string, where: { bundleDir: string }): Promise<RunState>;
  /** Calls onExit once when the machine's init ends (immediately if it already has). Returns an unsubscribe. */
  watchExit(id: string, where: { bundleDir: string }, onExit: (exit: ExitInfo) => void): () => void;
  kill(id: string, signal: string): Promise<void>;
  exec(id: string, request: ExecRequest): Promise<ExecResult>;
  execStream(id: string, request: ExecStreamRequest): Promise<ExecProcess>;
  /** Host pids of every process in the running machine. */
  processes(id: string): Promise<number[]>;
  /** Drops runtime state of an exited machine (and the exit record). Idempotent. */
  cleanup(id: string, where: { bundleDir: string }): Promise<void>;
}
