// The daemon's side of the launcher (launcher-main.ts): starts it, asks it things, and starts a
// new one when it has died (machines do not notice: they run under their own shims).
//
// On a hybrid-cgroup host the launcher lives in a mount namespace of its own, a slave of the
// host's. Mounts the daemon makes later (machine root filesystems, idmapped layer views, network
// namespaces) reach it only below a shared mount, so the directory holding them is bind-mounted
// onto itself and made shared first, once (it stays so until it is unmounted; a restarted daemon
// finds it that way), and so is /run/netns, as `ip netns` itself does.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';
import { encodeFrame, FRAME, firstLine, frameReader, type ExecEnd, type LauncherRequest, type RunReply, type SpawnReply } from './launcher-protocol.ts';

const run = promisify(execFile);
const MAIN = fileURLToPath(new URL('./launcher-main.ts', import.meta.url));
const READY_TIMEOUT_MS = 10_000;
/** sun_path is 108 bytes with its terminating NUL. */
const MAX_SOCKET_PATH = 107;
const NETNS_DIR = '/run/netns';

export type LauncherOptions = {
  stateRoot: string;
  socketPath: string;
  /** cgroup2 mounts the launcher hides from crun; empty when the host is not hybrid. */
  hiddenCgroup2: string[];
  /** Where the daemon's mounts live; made a shared mount so the launcher sees later ones. */
  sharedDir: string;
};

/** A command the launcher runs with its stdio relayed here. `ended` never rejects. */
export type LaunchedExec = {
  /** The launcher-side process (crun's client, or `script` around it); set once it runs. */
  readonly pid: number | undefined;
  readonly stdin: Writable | undefined;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly ended: Promise<ExecEnd | { error: string }>;
  /** SIGKILLs the launcher-side process's group, now or as soon as it runs; then stops waiting
   * for pipes a process that left the group may still hold. */
  kill(): void;
};

type ExecRequest = Extract<LauncherRequest, { op: 'exec' }>;

export class Launcher {
  readonly #opts: LauncherOptions;
  #current: Promise<ChildProcess> | undefined;

  constructor(opts: LauncherOptions) {
    if (Buffer.byteLength(opts.socketPath) > MAX_SOCKET_PATH) {
      throw new HangarError('host_unsupported', `the launcher's socket path ${opts.socketPath} is too long for a unix socket`, {
        hint: `use a data dir whose path is under ${MAX_SOCKET_PATH - 20} bytes`,
      });
    }
    this.#opts = opts;
  }

  /** The running launcher's pid, starting one if there is none. */
  async pid(): Promise<number> {
    return (await this.#ensure()).pid!;
  }

  /** A short crun call (kill, delete, state, ps, create) to completion. */
  async run(req: Exclude<LauncherRequest, { op: 'start' | 'session' | 'exec' }>): Promise<RunReply> {
    const sock = await this.#connect(req);
    return (await readReply(sock, req)) as RunReply;
  }

  /** Starts a machine's or a session's shim; resolves with its pid. */
  async start(req: Extract<LauncherRequest, { op: 'start' | 'session' }>): Promise<number> {
    const sock = await this.#connect(req);
    return ((await readReply(sock, req)) as SpawnReply).pid;
  }

  exec(req: ExecRequest): LaunchedExec {
    return new RemoteExec(this.#connect(req), req);
  }

  /** Connects and sends `req`, starting a new launcher once if the last one is gone. */
  async #connect(req: LauncherRequest): Promise<Socket> {
    for (let attempt = 0; ; attempt++) {
      const launcher = await this.#ensure();
      try {
        const sock = await connect(this.#opts.socketPath);
        sock.write(`${JSON.stringify(req)}\n`);
        return sock;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (attempt > 0 || (code !== 'ECONNREFUSED' && code !== 'ENOENT')) {
          throw new HangarError('runtime_error', `cannot reach the launcher: ${(err as Error).message}`, {
            hint: 'retry; if it keeps failing, restart the daemon and read its log',
            cause: err,
          });
        }
        // Dead, or dying: nothing was sent, so asking a new one is safe.
        if (this.#current && (await this.#current.catch(() => undefined)) === launcher) this.#current = undefined;
        if (launcher.exitCode === null && launcher.signalCode === null) launcher.kill('SIGKILL');
      }
    }
  }

  /** The live launcher, started if there is none (one start at a time, whoever asks). */
  async #ensure(): Promise<ChildProcess> {
    for (;;) {
      this.#current ??= this.#spawn();
      const starting = this.#current;
      const child = await starting.catch((err: unknown) => {
        if (this.#current === starting) this.#current = undefined;
        throw err;
      });
      if (child.exitCode === null && child.signalCode === null) return child;
      if (this.#current === starting) this.#current = undefined;
    }
  }

  async #spawn(): Promise<ChildProcess> {
    const { stateRoot, socketPath, hiddenCgroup2, sharedDir } = this.#opts;
    if (hiddenCgroup2.length > 0) {
      await mkdir(NETNS_DIR, { recursive: true });
      await makeShared(sharedDir);
      await makeShared(NETNS_DIR);
    }
    const node = [process.execPath, '--disable-warning=ExperimentalWarning', MAIN, stateRoot, socketPath, ...hiddenCgroup2];
    const argv = hiddenCgroup2.length > 0 ? ['unshare', '-m', '--propagation', 'slave', ...node] : node;
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await Promise.race([
        once(child.stdout!, 'data'),
        once(child, 'exit').then(([code, signal]) => Promise.reject(new Error(`it exited (${signal ?? code})`))),
        once(child, 'error').then(([err]) => Promise.reject(err as Error)),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer in ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS).unref()),
      ]);
    } catch (err) {
      child.kill('SIGKILL');
      throw new HangarError('host_unsupported', `the launcher did not start: ${(err as Error).message}`, {
        hint: 'check that crun and util-linux (unshare, umount) are installed and the daemon runs as root; its error is in the daemon log',
        cause: err,
      });
    }
    // Its stdin stays open as long as we live: when we die, it sees end of file and exits.
    child.unref();
    (child.stdin as Socket).unref();
    (child.stdout as Socket).unref();
    return child;
  }
}

/** Makes `dir` a shared mount (bind-mounting it onto itself if it is not a mount point). */
async function makeShared(dir: string): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const escaped = dir.replace(/[ \t\n\\]/g, (c) => '\\' + c.charCodeAt(0).toString(8).padStart(3, '0'));
  // The last entry for a mount point is the one on top.
  const entry = info.split('\n').findLast((line) => line.split(' ')[4] === escaped);
  if (entry?.split(' - ')[0]!.split(' ').some((field) => field.startsWith('shared:'))) return;
  try {
    // Recursive: mounts already below it stay visible, and become shared too, so their unmount reaches the launcher.
    if (!entry) await run('mount', ['--rbind', dir, dir]);
    await run('mount', ['--make-rshared', dir]);
  } catch (err) {
    throw new HangarError('host_unsupported', `cannot make ${dir} a shared mount: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`, {
      hint: 'the daemon must run as root in the host mount namespace',
      cause: err,
    });
  }
}

function connect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve(sock);
    });
    sock.once('error', reject);
  });
}

function launcherError(req: LauncherRequest, why: string): HangarError {
  return new HangarError('runtime_error', `the launcher could not ${req.op} ${'id' in req ? req.id : ''}: ${why}`, {
    hint: 'retry; if it keeps failing, read the daemon log',
  });
}

/** The first line back on `sock`, parsed; the connection is then closed. */
function readReply(sock: Socket, req: LauncherRequest): Promise<RunReply | SpawnReply> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const onData = firstLine((line) => {
      settled = true;
      sock.destroy();
      try {
        const body = JSON.parse(line) as RunReply | SpawnReply | { error: string };
        if ('error' in body) reject(launcherError(req, body.error));
        else resolve(body);
      } catch {
        reject(launcherError(req, 'its answer is not JSON'));
      }
    });
    sock.on('data', onData);
    sock.on('error', () => {});
    sock.on('close', () => {
      if (!settled) reject(launcherError(req, 'it hung up without an answer (did it die?)'));
    });
  });
}

class RemoteExec implements LaunchedExec {
  pid: number | undefined;
  readonly stdin: Writable | undefined;
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  readonly ended: Promise<ExecEnd | { error: string }>;
  readonly #sock: Promise<Socket | undefined>;

  constructor(connecting: Promise<Socket>, req: ExecRequest) {
    this.#sock = connecting.catch(() => undefined);
    this.ended = this.#relay(connecting);
    if (req.stdin || req.tty) {
      const send = (frame: Buffer, done: (err?: Error | null) => void) => {
        void this.#sock.then((sock) => {
          // A command that is gone takes no more input; what was sent is dropped, as a closed pipe would.
          if (!sock || sock.destroyed) return done();
          sock.write(frame, () => done());
        });
      };
      this.stdin = new Writable({
        write: (chunk: Buffer, _encoding, done) => send(encodeFrame(FRAME.stdin, chunk), done),
        final: (done) => send(encodeFrame(FRAME.stdinEnd), done),
      });
    }
  }

  #killed = false;

  kill(): void {
    this.#killed = true;
    if (this.pid) killGroup(this.pid);
    void this.#sock.then((sock) => {
      if (sock && !sock.destroyed) sock.write(encodeFrame(FRAME.release));
    });
  }

  async #relay(connecting: Promise<Socket>): Promise<ExecEnd | { error: string }> {
    let sock: Socket;
    try {
      sock = await connecting;
    } catch (err) {
      return this.#fail({ error: (err as Error).message });
    }
    return new Promise((resolve) => {
      let end: ExecEnd | { error: string } = { error: 'the launcher hung up before the command ended (did it die?)' };
      const deliver = (stream: PassThrough, data: Buffer) => {
        if (stream.destroyed || stream.writableEnded) return;
        if (!stream.write(data)) {
          sock.pause();
          stream.once('drain', () => sock.resume());
        }
      };
      const frames = frameReader((type, payload) => {
        if (type === FRAME.stdout) deliver(this.stdout, payload);
        else if (type === FRAME.stderr) deliver(this.stderr, payload);
        else if (type === FRAME.exit) end = parseEnd(payload);
      });
      const header = firstLine((line, rest) => {
        try {
          const body = JSON.parse(line) as SpawnReply | { error: string };
          if ('error' in body) end = body;
          else this.pid = body.pid;
          if (this.#killed && this.pid) killGroup(this.pid);
        } catch {
          end = { error: 'the launcher answered with something that is not JSON' };
          sock.destroy();
          return;
        }
        if (rest.length > 0) frames(rest);
      });
      sock.on('data', (chunk: Buffer) => {
        if (!header(chunk)) frames(chunk);
      });
      sock.on('error', () => {});
      sock.on('close', () => resolve('error' in end ? this.#fail(end) : (this.#endStreams(), end)));
    });
  }

  /** Says why on the command's stderr, as a shell would. */
  #fail(end: { error: string }): { error: string } {
    if (!this.stderr.destroyed && !this.stderr.writableEnded) this.stderr.write(`hangar: cannot run crun exec: ${end.error}\n`);
    this.#endStreams();
    return end;
  }

  #endStreams(): void {
    for (const s of [this.stdout, this.stderr]) if (!s.destroyed && !s.writableEnded) s.end();
  }
}

function parseEnd(payload: Buffer): ExecEnd | { error: string } {
  try {
    return JSON.parse(payload.toString('utf8')) as ExecEnd;
  } catch {
    return { error: 'the launcher sent an exit that is not JSON' };
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
