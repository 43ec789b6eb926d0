// The files a machine's shim leaves in its bundle directory, and what they say. They are the
// runtime's own record of a run, so a restarted daemon reads the same truth the old one saw:
//   shim      "<shim pid> <uptime at start>", written before crun runs
//   pid       host pid of the machine's init, written by crun once the init runs
//   exit      crun's exit status, written (atomically, by rename) after the machine is gone
import { readFileSync, statSync, unlinkSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import type { ExitInfo } from './driver.ts';

export const SHIM_FILE = 'shim';
export const PID_FILE = 'pid';
export const EXIT_FILE = 'exit';
export const EXIT_TMP_FILE = 'exit.tmp';
export const SHIM_ARGV0 = 'hangar-shim';

/** A machine's log is at most LOG_FILES files (`current` and the ones before it) of LOG_FILE_BYTES. */
export const LOG_FILE_BYTES = 8 * 2 ** 20;
export const LOG_FILES = 2;
/** The file of a machine's log directory that is being written. */
export const CURRENT_LOG = 'current';

// The shim: a small detached shell per machine that waits for crun and records the exit here, so
// machines outlive the daemon and its launcher. $1 bundle, $2 id, $3 the log directory, rest: crun
// with its global flags. Given fd 3 (the machine's cgroup v2 cgroup.procs on a hybrid host), it
// first moves itself there, so the machine's processes start in that group. `crun run` in the
// foreground waits for the machine and deletes it when it ends. The machine's stdout and stderr
// go through multilog (daemontools), which caps the log as it is written, rotating by rename, so
// a machine writing gigabytes a second holds at most LOG_FILES × LOG_FILE_BYTES of disk and no
// byte is lost to a copy. The exit is recorded once multilog has written the last of the output.
export const SHIM_SCRIPT = [
  '{ echo $$ >&3; } 2>/dev/null; exec 3>&-',
  'b=$1; id=$2; logs=$3; shift 3',
  `read up rest < /proc/uptime; echo "$$ $up" > "$b/${SHIM_FILE}"`,
  `{ "$@" run -b "$b" --pid-file "$b/${PID_FILE}" "$id" < /dev/null; echo $? > "$b/${EXIT_TMP_FILE}"; } 2>&1 | multilog s${LOG_FILE_BYTES} n${LOG_FILES} "$logs"`,
  `mv -f "$b/${EXIT_TMP_FILE}" "$b/${EXIT_FILE}"`,
].join('\n');

/** A small state file's text, or undefined while it is absent. */
export function readSmall(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** A positive pid from a pid file, or undefined while it is absent or half-written. */
export function readPid(bundleDir: string): number | undefined {
  const pid = Number.parseInt(readSmall(join(bundleDir, PID_FILE)) ?? '', 10);
  return pid > 0 ? pid : undefined;
}

export function readShim(bundleDir: string): { pid: number; startedAtSec: number } | undefined {
  const [pid, up] = (readSmall(join(bundleDir, SHIM_FILE)) ?? '').trim().split(/\s+/);
  const shim = { pid: Number.parseInt(pid ?? '', 10), startedAtSec: Number.parseFloat(up ?? '') };
  return shim.pid > 0 && Number.isFinite(shim.startedAtSec) ? shim : undefined;
}

export type RawExit = { status: number; at: Date };

export function readExitFile(bundleDir: string): RawExit | undefined {
  const path = join(bundleDir, EXIT_FILE);
  const text = readSmall(path);
  if (text === undefined || text.trim() === '') return undefined;
  const status = Number.parseInt(text, 10);
  if (!Number.isFinite(status)) return undefined;
  let at = new Date();
  try {
    at = statSync(path).mtime;
  } catch {
    // removed between read and stat (a concurrent cleanup); the read value still stands
  }
  return { status, at };
}

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/**
 * The exit as the contract reports it. tini (and crun) report death by signal N as 128+N, so a
 * status in that range is read as a signal; an app that itself exits 130 is indistinguishable.
 */
export function toExitInfo(raw: RawExit, oomKilled: boolean): ExitInfo {
  const info: ExitInfo = { exitCode: raw.status, oomKilled, exitedAt: raw.at };
  const signal = raw.status > 128 ? SIGNAL_NAMES.get(raw.status - 128) : undefined;
  if (signal) info.signal = signal;
  return info;
}

/** True if `pid` is alive and sits in the cgroup `cgroupPath` (guards against pid reuse). */
export function isInCgroup(pid: number, cgroupPath: string): boolean {
  const text = readSmall(`/proc/${pid}/cgroup`);
  return text !== undefined && text.split('\n').some((line) => line.endsWith(`:${cgroupPath}`));
}

/** True if `pid` is alive and is the shim of `bundleDir` (guards against pid reuse). */
export function isShimOf(pid: number, bundleDir: string): boolean {
  const argv = (readSmall(`/proc/${pid}/cmdline`) ?? '').split('\0');
  return argv.includes(SHIM_ARGV0) && argv.includes(bundleDir);
}

export async function removeRunFiles(bundleDir: string): Promise<void> {
  // In place, not on the thread pool: usually there are none (the last run's cleanup took them),
  // and four unlinks of nothing cost less than one trip there and back.
  for (const f of [SHIM_FILE, PID_FILE, EXIT_FILE, EXIT_TMP_FILE]) {
    try {
      unlinkSync(join(bundleDir, f));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}
