// Runs a command inside a running machine with `crun exec`, through the launcher, which relays its
// stdio. On timeout or abort the exec'd process itself is killed: killing only the crun client
// would leave it running. The process (command, env, user, cwd) goes to crun in a process.json,
// never on its command line: env values are often secrets, and every host user can read every
// process's argv.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { readFile, readlink, unlink } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';
import { cgroupsPathFor } from './oci-spec.ts';
import type { ExecExit, ExecProcess, ExecRequest, ExecResult, ExecStreamRequest } from './driver.ts';
import type { Launcher } from './launcher-client.ts';

export const EXEC_OUTPUT_CAP_BYTES = 4 * 1024 * 1024;
const run = promisify(execFile);

type MachineProcess = { env: string[]; cwd: string; user: { uid: number; gid: number }; capabilities?: Record<string, string[]> };

/** Overrides replace same-named variables of the machine's env, as `docker exec -e` does. */
export function mergeEnv(base: string[], overrides: string[]): string[] {
  const key = (entry: string) => entry.split('=', 1)[0];
  const overridden = new Set(overrides.map(key));
  return [...base.filter((e) => !overridden.has(key(e))), ...overrides];
}

class CappedBuffer {
  chunks: Buffer[] = [];
  size = 0;
  truncated = false;
  push(chunk: Buffer) {
    const room = EXEC_OUTPUT_CAP_BYTES - this.size;
    if (chunk.length > room) this.truncated = true;
    if (room <= 0) return;
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.chunks.push(kept);
    this.size += kept.length;
  }
}

function readMachineProcess(bundleDir: string): MachineProcess {
  try {
    return (JSON.parse(readFileSync(join(bundleDir, 'config.json'), 'utf8')) as { process: MachineProcess }).process;
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

/** Buffered exec: output is collected (up to the cap) and returned with the exit code. */
export async function crunExec(launcher: Launcher, id: string, bundleDir: string, req: ExecRequest): Promise<ExecResult> {
  const { stdin, ...rest } = req;
  const proc = spawnExec(launcher, id, bundleDir, rest, { stdin: stdin !== undefined });
  const stdout = new CappedBuffer();
  const stderr = new CappedBuffer();
  proc.stdout.on('data', (c: Buffer) => stdout.push(c));
  proc.stderr.on('data', (c: Buffer) => stderr.push(c));
  if (stdin !== undefined) proc.stdin.end(stdin);
  const exit = await proc.exit;
  if (exit.cancelled) throw req.signal?.reason ?? new Error('exec cancelled');
  return {
    exitCode: exit.exitCode,
    ...(exit.exitSignal !== undefined ? { exitSignal: exit.exitSignal } : {}),
    stdout: Buffer.concat(stdout.chunks),
    stderr: Buffer.concat(stderr.chunks),
    timedOut: exit.timedOut,
    truncated: stdout.truncated || stderr.truncated,
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

  let timedOut = false;
  let cancelled = false;
  const execPid = async () => Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
  const killExec = async () => {
    // crun puts the exec'd process in a new session (led by a helper that has exited), so the
    // group to kill is read from /proc: it takes the process's children too. The launcher's
    // child leads a group of its own, which covers a process crun has not forked yet (or an
    // exec the launcher has not even started).
    const pid = await execPid();
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
    const finish = (exitCode: number, exitSignal?: number) => {
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
    stderr: child.stderr,
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
