// Runs a command inside a running machine with `crun exec`, through the launcher, which relays its
// stdio. On timeout or abort the exec'd process itself is killed: killing only the crun client
// would leave it running. The process (command, env, user, cwd) goes to crun in a process.json,
// never on its command line: env values are often secrets, and every host user can read every
// process's argv.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { readFile, readlink, unlink } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Transform, Writable, type Readable } from 'node:stream';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';
import { DEFAULT_MAX_OUTPUT_BYTES, keepOutputs, OutputKeeper } from '../protocol/output-cap.ts';
import { cgroupsPathFor } from './oci-spec.ts';
import type { ExecExit, ExecProcess, ExecRequest, ExecResult, ExecStreamRequest } from './driver.ts';
import type { Launcher } from './launcher-client.ts';
import { readBundleFacts, type MachineProcess } from './bundle-config.ts';

const run = promisify(execFile);

/** Overrides replace same-named variables of the machine's env, as `docker exec -e` does. */
export function mergeEnv(base: string[], overrides: string[]): string[] {
  const key = (entry: string) => entry.split('=', 1)[0];
  const overridden = new Set(overrides.map(key));
  return [...base.filter((e) => !overridden.has(key(e))), ...overrides];
}

function readMachineProcess(bundleDir: string): MachineProcess {
  try {
    return readBundleFacts(bundleDir).process;
  } catch (err) {
    throw new HangarError('runtime_error', `cannot read the machine's bundle in ${bundleDir}`, {
      hint: 'the machine was not prepared on this host or its bundle was removed; update or recreate it',
      cause: err,
    });
  }
}

/**
 * Writes the process.json `crun exec --process` reads: what `crun exec --tty --cwd --user -e…
 * --no-new-privs` builds from its flags, plus the machine's capabilities: crun 1.8 falls back to
 * them when the file names none, and saying so keeps that true whatever a later crun does. No
 * rlimits, as with the flags: the exec keeps crun's. Mode 600, never replacing a file.
 */
export function writeExecProcess(bundleDir: string, processFile: string, req: Pick<ExecStreamRequest, 'command' | 'env' | 'cwd' | 'uid' | 'gid' | 'tty'>): void {
  const machine = readMachineProcess(bundleDir);
  const env = mergeEnv(machine.env, [...(req.tty ? ['TERM=xterm-256color'] : []), ...(req.env ?? [])]);
  const processJson = {
    terminal: Boolean(req.tty),
    user: { uid: req.uid ?? machine.user.uid, gid: req.gid ?? machine.user.gid },
    args: req.command,
    env,
    cwd: req.cwd ?? machine.cwd,
    ...(machine.capabilities ? { capabilities: machine.capabilities } : {}),
    noNewPrivileges: true,
  };
  writeFileSync(processFile, JSON.stringify(processJson), { mode: 0o600, flag: 'wx' });
}

/** Buffered exec: output is collected (its head and tail, within the budget) and returned with the exit code. */
export async function crunExec(launcher: Launcher, id: string, bundleDir: string, req: ExecRequest): Promise<ExecResult> {
  const { stdin, maxOutputBytes = DEFAULT_MAX_OUTPUT_BYTES, ...rest } = req;
  const proc = spawnExec(launcher, id, bundleDir, rest, { stdin: stdin !== undefined });
  const stdout = new OutputKeeper(maxOutputBytes);
  const stderr = new OutputKeeper(maxOutputBytes);
  proc.stdout.on('data', (c: Buffer) => stdout.push(c));
  proc.stderr.on('data', (c: Buffer) => stderr.push(c));
  if (stdin !== undefined) proc.stdin.end(stdin);
  const exit = await proc.exit;
  if (exit.cancelled) throw req.signal?.reason ?? new Error('exec cancelled');
  const kept = keepOutputs(stdout, stderr, maxOutputBytes);
  return {
    exitCode: exit.exitCode,
    ...(exit.exitSignal !== undefined ? { exitSignal: exit.exitSignal } : {}),
    stdout: kept.stdout.text,
    stderr: kept.stderr.text,
    stdoutDroppedBytes: kept.stdout.droppedBytes,
    stderrDroppedBytes: kept.stderr.droppedBytes,
    timedOut: exit.timedOut,
  };
}

/**
 * Starts a command and hands back its streams. With `tty`, the launcher gives crun a terminal to
 * stand on (crun's own `exec -t` relays between its stdin and a pty inside the machine, and
 * insists its stdin is a terminal); resizes go straight to the machine-side pty.
 */
export function spawnExec(launcher: Launcher, id: string, bundleDir: string, req: ExecStreamRequest, opts: { stdin?: boolean } = {}): ExecProcess {
  if (req.command.length === 0) throw new HangarError('validation_failed', 'exec needs a command', { hint: 'pass command: ["sh", "-c", "..."]' });
  req.signal?.throwIfAborted();
  const execName = `exec-${randomUUID()}`;
  const pidFile = join(bundleDir, `${execName}.pid`);
  const processFile = join(bundleDir, `${execName}.process.json`);
  writeExecProcess(bundleDir, processFile, req);
  const child = launcher.exec({
    op: 'exec',
    id,
    processFile,
    pidFile,
    cgroupPath: cgroupsPathFor(id),
    stdin: opts.stdin !== false,
    ...(req.tty ? { tty: req.tty } : {}),
  });
  const removeProcessFile = () => {
    try {
      unlinkSync(processFile);
    } catch {
      // already removed
    }
  };

  const stderr = keepingHead(child.stderr);
  let timedOut = false;
  let cancelled = false;
  const execPid = async () => Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
  let crunEnded = false;
  void child.ended.then(() => (crunEnded = true));
  const killExec = async () => {
    // crun puts the exec'd process in a new session (led by a helper that has exited), so the
    // group to kill is read from /proc: it takes the process's children too. The launcher's
    // child leads a group of its own, which covers a process crun has not forked yet (or an
    // exec the launcher has not even started). crun writes the pid file just after the process
    // starts, which may already have written output: wait for the file while crun runs, else a
    // process started a moment before the kill would outlive it.
    let pid = await execPid();
    for (let i = 0; !(pid > 0) && !crunEnded && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 20));
      pid = await execPid();
    }
    if (pid > 0) {
      const pgrp = processGroupOf(pid);
      if (pgrp !== undefined && pgrp > 1 && pgrp !== process.pid) tryKill(-pgrp);
      tryKill(pid);
    }
    child.kill();
  };
  const timer = setTimeout(() => {
    timedOut = true;
    void killExec();
  }, req.timeoutMs);
  const onAbort = () => {
    cancelled = true;
    void killExec();
  };
  req.signal?.addEventListener('abort', onAbort, { once: true });

  const exit = new Promise<ExecExit>((resolve) => {
    const finish = (code: number, exitSignal?: number) => {
      const exitCode = code === CRUN_FAILED && !existsSync(pidFile) ? (couldNotStart(stderr.head()) ?? code) : code;
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
      void unlink(pidFile).catch(() => {});
      removeProcessFile();
      resolve({ exitCode, ...(exitSignal !== undefined ? { exitSignal } : {}), timedOut, cancelled });
    };
    void child.ended.then((end) => {
      if ('error' in end) return finish(127); // the reason is on its stderr
      const { code, signal } = end;
      const signum = signal ? constants.signals[signal] : undefined;
      if (timedOut || cancelled) finish(code ?? 128 + constants.signals.SIGKILL, constants.signals.SIGKILL);
      else finish(code ?? 128 + (signum ?? 0), signum);
    });
  });

  // crun has read the file once the exec'd process exists (its pid file is written after).
  const started = waitForPid(pidFile, exit);
  void started.then(removeProcessFile);

  return {
    stdout: child.stdout,
    stderr: stderr.stream,
    stdin: req.tty ? heldUntil(child.stdin!, started) : (child.stdin ?? discardingStdin()),
    exit,
    resize: async (rows, cols) => {
      if (!req.tty) throw new HangarError('validation_failed', 'resize needs an exec started with a tty', { hint: 'start the exec with tty: true' });
      const pid = await execPid();
      if (!(pid > 0)) return; // not started yet: it starts at the size `script` was given
      await resizeMachinePty(pid, rows, cols);
    },
  };
}

/** crun's exit code when it fails itself, e.g. when the command cannot be started. */
const CRUN_FAILED = 255;

/** A shell's exit code for a command crun could not start (its message says why): 127 not found, 126 not executable. */
function couldNotStart(message: string): number | undefined {
  if (/^executable file `.*` not found/m.test(message)) return 127;
  if (/^open executable: Permission denied/m.test(message)) return 126;
  return undefined;
}

/** `stream` as it is, and its first bytes as text: enough to read crun's own error. */
function keepingHead(stream: Readable): { stream: Readable; head: () => string } {
  let head = '';
  const through = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      if (head.length < 1024) head += chunk.toString('utf8', 0, 1024);
      done(null, chunk);
    },
  });
  stream.pipe(through);
  return { stream: through, head: () => head };
}

/** The exec'd process's terminal is a pty of the machine's own devpts, reachable through /proc. */
export async function resizeMachinePty(pid: number, rows: number, cols: number): Promise<void> {
  const tty = await readlink(`/proc/${pid}/fd/0`).catch(() => '');
  if (!/^\/dev\/pts\/\d+$/.test(tty)) return; // gone, or its stdin was redirected
  await run('stty', ['-F', `/proc/${pid}/root${tty}`, 'rows', String(rows), 'cols', String(cols)]).catch(() => {});
}

/** Resolves once crun has written the exec'd pid (so `stty raw` has run), or the exec has ended. */
async function waitForPid(pidFile: string, exit: Promise<unknown>): Promise<void> {
  let ended = false;
  void exit.then(() => (ended = true));
  while (!ended && !(Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10) > 0)) await new Promise((r) => setTimeout(r, 10));
}

/** A stdin that passes writes on once `ready` settles: keys sent before the terminal is raw would be echoed twice. */
function heldUntil(target: Writable, ready: Promise<void>): Writable {
  const held = new PassThrough();
  void ready.then(() => held.pipe(target));
  return held;
}

function discardingStdin(): Writable {
  return new Writable({ write: (_chunk, _encoding, done) => done() });
}

export function processGroupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces and parentheses: state ppid pgrp.
    const pgrp = Number.parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2] ?? '', 10);
    return Number.isFinite(pgrp) ? pgrp : undefined;
  } catch {
    return undefined;
  }
}

function tryKill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
