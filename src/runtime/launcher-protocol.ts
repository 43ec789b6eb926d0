// What the daemon and its launcher (launcher-main.ts) say to each other over the launcher's unix
// socket. One connection per request: the first line is the request as JSON, the first line back
// is the reply as JSON. An exec then carries its stdio on the same connection as frames:
// one type byte, a 4-byte big-endian length, the payload.

export type LauncherRequest =
  /** Starts a machine's shim (run-files.ts), detached; the machine logs to logPath (`<dir>/current`), the shim's own errors too. */
  | { op: 'start'; id: string; bundleDir: string; logPath: string; cgroupPath: string }
  | { op: 'kill'; id: string; signal: string }
  | { op: 'delete'; id: string }
  | { op: 'state'; id: string }
  | { op: 'ps'; id: string }
  /** Creates (never starts) a container: how crun is made to compile a seccomp profile. */
  | { op: 'create'; id: string; bundleDir: string }
  /** `crun exec --process processFile`; with `tty`, on a host pty of that size. */
  | { op: 'exec'; id: string; processFile: string; pidFile: string; cgroupPath: string; stdin: boolean; tty?: { rows: number; cols: number } }
  /** Starts a session's shim (session-files.ts), detached: `crun exec` of dir/process.json, stdin from
   * a FIFO when `stdin` (always with `tty`), its output into dir. */
  | { op: 'session'; id: string; dir: string; cgroupPath: string; stdin: boolean; tty?: { rows: number; cols: number } };

/** The reply to kill, delete, state, ps and create: how crun ended and what it said. */
export type RunReply = { code: number; stdout: string; stderr: string };
/** The reply to start, session and exec: the pid of the process the launcher spawned. */
export type SpawnReply = { pid: number };
export type ErrorReply = { error: string };

export const FRAME = {
  /** daemon → launcher */
  stdin: 0,
  stdinEnd: 1,
  /** The daemon has killed the exec: stop waiting for its pipes (a process that left its group may hold them). */
  release: 5,
  /** launcher → daemon */
  stdout: 2,
  stderr: 3,
  /** JSON `{ code, signal }` of the exec's crun client (or of `script` around it); the last frame. */
  exit: 4,
} as const;

export type ExecEnd = { code: number | null; signal: NodeJS.Signals | null };

const HEADER_BYTES = 5;

export function encodeFrame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

/** Feeds bytes in, calls `onFrame` for each whole frame. */
export function frameReader(onFrame: (type: number, payload: Buffer) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= HEADER_BYTES) {
      const size = pending.readUInt32BE(1);
      if (pending.length < HEADER_BYTES + size) break;
      const type = pending.readUInt8(0);
      const payload = pending.subarray(HEADER_BYTES, HEADER_BYTES + size);
      pending = pending.subarray(HEADER_BYTES + size);
      onFrame(type, payload);
    }
  };
}

/**
 * Reads the first line of a connection (the request or the reply) and hands over the bytes after
 * it, which belong to the frames that follow. Calls `onLine` once.
 */
export function firstLine(onLine: (line: string, rest: Buffer) => void): (chunk: Buffer) => boolean {
  let pending: Buffer = Buffer.alloc(0);
  let done = false;
  return (chunk) => {
    if (done) return false;
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    const nl = pending.indexOf(0x0a);
    if (nl < 0) return true;
    done = true;
    onLine(pending.subarray(0, nl).toString('utf8'), pending.subarray(nl + 1));
    return true;
  };
}
