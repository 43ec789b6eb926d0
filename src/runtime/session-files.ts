// The files a session's shim keeps in the session's directory, and what they say. A session is a
// command started in a running machine that outlives whoever started it: it runs under a small
// detached shell (the session shim), as a machine runs under its own shim (run-files.ts), so it
// survives the client hanging up, the daemon and its launcher dying; a restarted daemon reads
// where it stands from these files alone.
//   shim          "<shim pid> <uptime at start>", written before the command starts
//   pid           host pid of the command, written by `crun exec --pid-file` once it runs
//   exit          the command's exit status, written (by rename) once all its output is on disk
//   stdin         a FIFO the command reads; the shim holds it open read-write, so the command
//                 never sees end-of-file while writers come and go (for tty and stdin sessions)
//   process.json  what crun runs (env included, so never on argv); removed once it runs
//   out.NNNNNNNNNN  the output, split by byte count into OUTPUT_CHUNK_BYTES files: chunk N holds
//                 bytes N*CHUNK.. of everything written, so any offset maps to a file and a
//                 position, and the oldest chunks are deleted as new ones start (scrollback cap)
//
// Why `script` + a FIFO + `split` rather than tmux: every session is then a self-contained
// process tree whose record is its directory, the same shape as a machine's shim; tmux would put
// all sessions behind one shared server (its death takes them all, and it is one more daemon to
// find and reconcile) and keeps its scrollback as rendered screen lines, not as the bytes the
// command wrote, so offsets into the output could not be exact. `split -b` writes what it reads
// as it reads it (no line buffering: a prompt with no newline shows at once) and its --filter
// deletes old chunks as it goes, so the cap holds with no daemon running.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { readSmall } from './run-files.ts';

export const SESSION_SHIM_ARGV0 = 'hangar-session';
export const SESSION_SHIM_FILE = 'shim';
export const SESSION_PID_FILE = 'pid';
export const SESSION_EXIT_FILE = 'exit';
export const SESSION_STDIN_FILE = 'stdin';
export const SESSION_PROCESS_FILE = 'process.json';
export const OUTPUT_PREFIX = 'out.';
export const OUTPUT_DIGITS = 10;

/** Output is kept in chunks of this size; at most OUTPUT_CHUNKS_KEPT of them (6–8 MiB of scrollback). */
export const OUTPUT_CHUNK_BYTES = 2 * 2 ** 20;
export const OUTPUT_CHUNKS_KEPT = 4;
export const SCROLLBACK_BYTES = OUTPUT_CHUNK_BYTES * OUTPUT_CHUNKS_KEPT;

// split's per-chunk filter: when chunk N starts, chunk N-KEPT goes, then the chunk is written.
// $FILE is the chunk's path; its number loses leading zeros before sh does arithmetic on it.
const PRUNE_FILTER = [
  'n=${FILE##*.}',
  'while case $n in 0?*) true;; *) false;; esac; do n=${n#0}; done',
  `[ "$n" -lt ${OUTPUT_CHUNKS_KEPT} ] || rm -f "\${FILE%.*}.$(printf %0${OUTPUT_DIGITS}d $((n-${OUTPUT_CHUNKS_KEPT})))"`,
  'exec cat > "$FILE"',
].join('; ');

// $1 the session dir, $2 "fifo" (stdin from the FIFO) or "null", rest: the command (crun exec,
// or `script` around it for a tty). Given fd 3 (the machine's cgroup v2 cgroup.procs on a hybrid
// host) it first moves itself there, as the machine's shim does. stdout and stderr go together,
// as a terminal shows them. The exit is recorded once split has written the last of the output.
export const SESSION_SHIM_SCRIPT = [
  '{ echo $$ >&3; } 2>/dev/null; exec 3>&-',
  'd=$1; in=$2; shift 2',
  `read up rest < /proc/uptime; echo "$$ $up" > "$d/${SESSION_SHIM_FILE}"`,
  `if [ "$in" = fifo ]; then mkfifo -m 600 "$d/${SESSION_STDIN_FILE}" && exec 0<>"$d/${SESSION_STDIN_FILE}"; else exec 0</dev/null; fi`,
  `f='${PRUNE_FILTER}'`,
  `{ "$@"; echo $? > "$d/exit.tmp"; } 2>&1 | SHELL=/bin/sh split -a ${OUTPUT_DIGITS} -d -b ${OUTPUT_CHUNK_BYTES} --filter="$f" - "$d/${OUTPUT_PREFIX}"`,
  `rm -f "$d/${SESSION_PROCESS_FILE}"`,
  `mv -f "$d/exit.tmp" "$d/${SESSION_EXIT_FILE}"`,
].join('\n');


/** The command's host pid, once crun has written it. */
export function readSessionPid(dir: string): number | undefined {
  const pid = Number.parseInt(readSmall(join(dir, SESSION_PID_FILE)) ?? '', 10);
  return pid > 0 ? pid : undefined;
}

export function readSessionShim(dir: string): number | undefined {
  const pid = Number.parseInt((readSmall(join(dir, SESSION_SHIM_FILE)) ?? '').split(' ')[0] ?? '', 10);
  return pid > 0 ? pid : undefined;
}

export function readSessionExit(dir: string): { status: number; at: Date } | undefined {
  const path = join(dir, SESSION_EXIT_FILE);
  const status = Number.parseInt(readSmall(path) ?? '', 10);
  if (!Number.isFinite(status)) return undefined;
  try {
    return { status, at: statSync(path).mtime };
  } catch {
    return { status, at: new Date() };
  }
}

/** True if `pid` is alive and is the shim of session dir `dir` (guards against pid reuse). */
export function isSessionShimOf(pid: number, dir: string): boolean {
  const argv = (readSmall(`/proc/${pid}/cmdline`) ?? '').split('\0');
  return argv.includes(SESSION_SHIM_ARGV0) && argv.includes(dir);
}

export type SessionRunState = { status: 'running'; pid: number | undefined } | { status: 'exited'; exitCode: number; at: Date } | { status: 'lost' };

/** Where a session stands, from its files: its shim is alive, it recorded an exit, or it vanished without one. */
export function sessionRunState(dir: string): SessionRunState {
  const exit = readSessionExit(dir);
  if (exit) return { status: 'exited', exitCode: exit.status, at: exit.at };
  const shim = readSessionShim(dir);
  if (shim !== undefined && isSessionShimOf(shim, dir)) return { status: 'running', pid: readSessionPid(dir) };
  // The shim records the exit before it ends; read again in case it did so just now.
  const late = readSessionExit(dir);
  return late ? { status: 'exited', exitCode: late.status, at: late.at } : { status: 'lost' };
}
