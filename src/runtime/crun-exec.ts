// Runs a command inside a running machine with `crun exec`, capturing its output. On timeout or
// abort the exec'd process itself is killed: killing only the crun client would leave it running.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, unlink } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import { type CrunCommand, crunArgv, inCrunNamespace } from './crun-command.ts';
import type { ExecRequest, ExecResult } from './driver.ts';

export const EXEC_OUTPUT_CAP_BYTES = 4 * 1024 * 1024;
const PIPE_GRACE_MS = 1_000;

type MachineProcess = { env: string[]; cwd: string; user: { uid: number; gid: number } };

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

export async function crunExec(cmd: CrunCommand, id: string, bundleDir: string, req: ExecRequest): Promise<ExecResult> {
  if (req.command.length === 0) throw new HangarError('validation_failed', 'exec needs a command', { hint: 'pass command: ["sh", "-c", "..."]' });
  req.signal?.throwIfAborted();
  const machine = readMachineProcess(bundleDir);
  const pidFile = join(bundleDir, `exec-${randomUUID()}.pid`);
  const env = mergeEnv(machine.env, req.env ?? []);
  const args = [
    'exec',
    '--pid-file',
    pidFile,
    '--no-new-privs',
    '--cwd',
    req.cwd ?? machine.cwd,
    '--user',
    `${req.uid ?? machine.user.uid}:${req.gid ?? machine.user.gid}`,
    // crun exec replaces the env when given any -e, so the full merged env is passed.
    ...env.flatMap((e) => ['-e', e]),
    id,
    ...req.command,
  ];
  const [file, ...rest] = inCrunNamespace(cmd, crunArgv(cmd, args));
  // Own process group: the exec'd process inherits it, so the whole group can be killed at once.
  const child = spawn(file!, rest, { detached: true, stdio: [req.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  const stdout = new CappedBuffer();
  const stderr = new CappedBuffer();
  child.stdout!.on('data', (c: Buffer) => stdout.push(c));
  child.stderr!.on('data', (c: Buffer) => stderr.push(c));
  if (req.stdin !== undefined) {
    child.stdin!.on('error', () => {}); // the command may exit without reading its stdin
    child.stdin!.end(req.stdin);
  }

  let timedOut = false;
  let aborted = false;
  const killExec = async () => {
    // crun puts the exec'd process in a new session (led by a helper that has exited), so the
    // group to kill is read from /proc: it takes the process's children too. Our own group covers
    // a process crun has not forked yet.
    const pid = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
    if (pid > 0) {
      const pgrp = processGroupOf(pid);
      if (pgrp !== undefined && pgrp > 1 && pgrp !== process.pid) tryKill(-pgrp);
      tryKill(pid);
    }
    if (child.pid) tryKill(-child.pid);
    // A process that left the group may still hold our pipes; stop waiting for them.
    setTimeout(() => {
      child.stdout!.destroy();
      child.stderr!.destroy();
    }, PIPE_GRACE_MS).unref();
  };
  const timer = setTimeout(() => {
    timedOut = true;
    void killExec();
  }, req.timeoutMs);
  const onAbort = () => {
    aborted = true;
    void killExec();
  };
  req.signal?.addEventListener('abort', onAbort, { once: true });

  return new Promise<ExecResult>((resolve, reject) => {
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new HangarError('runtime_error', `cannot run crun exec: ${err.message}`, { hint: 'check that crun is installed', cause: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
      void unlink(pidFile).catch(() => {});
      if (aborted) {
        reject(req.signal!.reason);
        return;
      }
      const signum = signal ? constants.signals[signal] : undefined;
      const result: ExecResult = {
        exitCode: code ?? 128 + (signum ?? 0),
        stdout: Buffer.concat(stdout.chunks),
        stderr: Buffer.concat(stderr.chunks),
        timedOut,
        truncated: stdout.truncated || stderr.truncated,
      };
      if (timedOut) result.exitSignal = constants.signals.SIGKILL;
      else if (signum !== undefined) result.exitSignal = signum;
      resolve(result);
    });
  });
}

function processGroupOf(pid: number): number | undefined {
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
