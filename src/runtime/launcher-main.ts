// The launcher: one small, long-lived process per daemon that runs every crun command for it
// (containerd's shim and conmon have this shape). It answers typed requests on a unix socket
// (launcher-protocol.ts), so a machine start, stop or exec costs one fork from a small process
// instead of a chain of spawns from the daemon's large heap.
//
// On a host with a cgroup2 mount next to the v1 controllers, crun 1.8 refuses to run; the daemon
// then starts this process in a private mount namespace (`unshare -m --propagation slave`), and it
// unmounts those cgroup2 mounts once, here. It keeps a descriptor of the v2 hierarchy from before
// that, to put each machine's processes in their own v2 group (crun does not manage v2 there).
// Mounts the daemon makes later reach this namespace by propagation (launcher-client.ts).
//
// It exits when its stdin (a pipe from the daemon) closes. Machines do not depend on it: each
// runs under its own detached shim (run-files.ts), so they outlive the launcher as well.
//
//   node launcher-main.ts <crun state root> <socket path> [cgroup2 mount to hide...]
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createServer, type Socket } from 'node:net';
import {
  encodeFrame,
  FRAME,
  firstLine,
  frameReader,
  type ErrorReply,
  type ExecEnd,
  type LauncherRequest,
  type RunReply,
  type SpawnReply,
} from './launcher-protocol.ts';
import { SHIM_ARGV0, SHIM_SCRIPT } from './run-files.ts';
import { SpareProcess } from './spare-process.ts';
import { SESSION_PID_FILE, SESSION_PROCESS_FILE, SESSION_SHIM_ARGV0, SESSION_SHIM_SCRIPT } from './session-files.ts';

const [stateRoot, socketPath, ...hidden] = process.argv.slice(2);
if (!stateRoot || !socketPath) {
  process.stderr.write('usage: launcher-main.ts <crun state root> <socket path> [cgroup2 mount...]\n');
  process.exit(2);
}

const RUN_TIMEOUT_MS = 10_000;
const PIPE_GRACE_MS = 1_000;
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const CGROUP_PATH = /^(\/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+$/;
// Moves the calling shell into the group open on fd 3, then runs the rest in its place.
const ENTER_GROUP = '{ echo $$ >&3; } 2>/dev/null; exec 3>&-; exec "$@"';

// Opened before the unmount: a path through this descriptor still reaches the hierarchy.
const v2Root = hidden[0] ? openSync(hidden[0], 'r') : undefined;
for (const mount of hidden) execFileSync('umount', ['-l', mount]);

// Forked ahead: a machine's shim (no pipes to us, as above) and an exec's crun client (its stdio piped to us).
const spareShims = new SpareProcess(['pipe', 'ignore', 'ignore'], ['sh', '-c', SHIM_SCRIPT, SHIM_ARGV0]);
const spareExecs = new SpareProcess(['pipe', 'pipe', 'pipe'], ['crun', '--root', stateRoot, 'exec']);

function crunArgv(args: string[]): string[] {
  return ['crun', '--root', stateRoot!, ...args];
}

/** The machine's v2 group (made if missing), its cgroup.procs open for writing; none on a non-hybrid host. */
function openGroup(cgroupPath: string): number | undefined {
  if (v2Root === undefined) return undefined;
  if (!CGROUP_PATH.test(cgroupPath) || cgroupPath.split('/').includes('..')) throw new Error(`bad cgroup path ${cgroupPath}`);
  const group = `/proc/self/fd/${v2Root}${cgroupPath}`;
  mkdirSync(group, { recursive: true });
  return openSync(`${group}/cgroup.procs`, 'w');
}

function checkId(id: string): void {
  if (!ID.test(id)) throw new Error(`bad machine id ${JSON.stringify(id)}`);
}

function reply(sock: Socket, body: RunReply | SpawnReply | ErrorReply): void {
  sock.end(`${JSON.stringify(body)}\n`);
}

function runCrun(args: string[]): Promise<RunReply | ErrorReply> {
  return new Promise((resolve) => {
    execFile('crun', ['--root', stateRoot!, ...args], { timeout: RUN_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve({ code: 0, stdout, stderr });
      if (typeof err.code === 'number') return resolve({ code: err.code, stdout, stderr });
      if (err.killed) return resolve({ code: 128 + 9, stdout, stderr: `${stderr}crun ${args[0]} timed out after ${RUN_TIMEOUT_MS} ms` });
      resolve({ error: `crun ${args[0]} failed to run: ${err.message}` });
    });
  });
}

/**
 * `crun create`: the created container keeps crun's stdio open until it is deleted, so its output
 * goes to a file, and crun's own exit (not the end of its output) ends the call.
 */
async function create(bundleDir: string, id: string): Promise<RunReply | ErrorReply> {
  const out = join(bundleDir, 'create.out');
  const fd = openSync(out, 'w');
  let child: ChildProcess;
  try {
    child = spawn('crun', ['--root', stateRoot!, 'create', '-b', bundleDir, id], { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
  const ended = await new Promise<{ code: number } | { error: string }>((resolve) => {
    child.once('error', (err) => resolve({ error: `crun create failed to run: ${err.message}` }));
    child.once('exit', (code, signal) => resolve({ code: code ?? 128 + (signal === 'SIGKILL' ? 9 : 15) }));
  });
  clearTimeout(timer);
  if ('error' in ended) return ended;
  const said = readFileSync(out, 'utf8');
  return { code: ended.code, stdout: '', stderr: said };
}

/** Resolves with the pid once the process runs; rejects if it could not be spawned. */
function spawned(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', reject);
  });
}

async function start(req: Extract<LauncherRequest, { op: 'start' }>): Promise<SpawnReply> {
  checkId(req.id);
  let groupFd: number | undefined;
  try {
    groupFd = openGroup(req.cgroupPath);
    const shimArgs = [req.bundleDir, req.id, dirname(req.logPath), ...crunArgv([])];
    const spare = spareShims.take({ args: shimArgs, stdin: 'null', appendOutputTo: req.logPath, groupFd });
    if (spare) return { pid: spare.pid! };
    const logFd = openSync(req.logPath, 'a');
    try {
      // Own session, no pipes to us: the shim and its machine outlive this process.
      const shim = spawn('sh', ['-c', SHIM_SCRIPT, SHIM_ARGV0, ...shimArgs], { detached: true, stdio: ['ignore', logFd, logFd, groupFd ?? 'ignore'] });
      shim.unref();
      return { pid: await spawned(shim) };
    } finally {
      closeSync(logFd);
    }
  } finally {
    if (groupFd !== undefined) closeSync(groupFd);
  }
}

/** A session's shim: like a machine's, own session and no pipes to us, so the command outlives this process. */
async function startSession(req: Extract<LauncherRequest, { op: 'session' }>): Promise<SpawnReply> {
  checkId(req.id);
  // Only a directory under the data dir's machines (the state root's sibling), named plainly.
  const machines = join(dirname(stateRoot!), 'machines') + '/';
  if (!req.dir.startsWith(machines) || req.dir.split('/').includes('..')) throw new Error(`bad session dir ${req.dir}`);
  let argv = crunArgv(['exec', '--pid-file', join(req.dir, SESSION_PID_FILE), '--process', join(req.dir, SESSION_PROCESS_FILE), req.id]);
  if (req.tty) argv = inTerminal(argv, req.tty);
  const groupFd = openGroup(req.cgroupPath);
  try {
    const shim = spawn('sh', ['-c', SESSION_SHIM_SCRIPT, SESSION_SHIM_ARGV0, req.dir, req.stdin || req.tty ? 'fifo' : 'null', ...argv], {
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', groupFd ?? 'ignore'],
      env: req.tty ? { ...process.env, SHELL: '/bin/sh' } : process.env,
    });
    shim.unref();
    return { pid: await spawned(shim) };
  } finally {
    if (groupFd !== undefined) closeSync(groupFd);
  }
}

/** argv on a fresh host pty of the given size, raw so bytes pass through untouched (crun's `exec -t` wants a terminal). */
function inTerminal(argv: string[], size: { rows: number; cols: number }): string[] {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const script = `stty raw -echo rows ${Math.trunc(size.rows)} cols ${Math.trunc(size.cols)} && exec ${argv.map(quote).join(' ')}`;
  return ['script', '--quiet', '--return', '--command', script, '/dev/null'];
}

async function exec(sock: Socket, req: Extract<LauncherRequest, { op: 'exec' }>, rest: Buffer): Promise<void> {
  checkId(req.id);
  const execArgs = ['--pid-file', req.pidFile, '--process', req.processFile, req.id];
  let argv = crunArgv(['exec', ...execArgs]);
  const groupFd = openGroup(req.cgroupPath);
  let child: ChildProcess;
  let pid: number;
  try {
    const spare = req.tty ? undefined : spareExecs.take({ args: execArgs, stdin: req.stdin ? 'keep' : 'null', groupFd });
    if (spare) {
      child = spare;
      pid = spare.pid!;
    } else {
      if (req.tty) argv = inTerminal(argv, req.tty);
      if (groupFd !== undefined) argv = ['sh', '-c', ENTER_GROUP, 'hangar-exec', ...argv];
      // Own process group, so the daemon can kill the crun client and what it started at once.
      child = spawn(argv[0]!, argv.slice(1), {
        detached: true,
        stdio: [req.stdin || req.tty ? 'pipe' : 'ignore', 'pipe', 'pipe', groupFd ?? 'ignore'],
        env: req.tty ? { ...process.env, SHELL: '/bin/sh' } : process.env,
      });
      pid = await spawned(child);
    }
  } finally {
    if (groupFd !== undefined) closeSync(groupFd);
  }
  sock.write(`${JSON.stringify({ pid } satisfies SpawnReply)}\n`);
  let ended = false;

  // Output, with backpressure: a slow reader pauses the command's pipes, not our memory.
  const out = [child.stdout!, child.stderr!];
  let waiting = false;
  const send = (type: number, data: Buffer) => {
    if (sock.write(encodeFrame(type, data)) || waiting) return;
    waiting = true;
    for (const s of out) s.pause();
    sock.once('drain', () => {
      waiting = false;
      for (const s of out) s.resume();
    });
  };
  child.stdout!.on('data', (d: Buffer) => send(FRAME.stdout, d));
  child.stderr!.on('data', (d: Buffer) => send(FRAME.stderr, d));
  child.on('close', (code, signal) => {
    ended = true;
    sock.end(encodeFrame(FRAME.exit, Buffer.from(JSON.stringify({ code, signal } satisfies ExecEnd))));
  });

  const stdin = child.stdin;
  stdin?.on('error', () => {}); // the command may exit without reading its stdin
  const feed = frameReader((type, payload) => {
    if (type === FRAME.stdin && stdin && !stdin.writableEnded) {
      if (!stdin.write(payload)) {
        sock.pause();
        stdin.once('drain', () => sock.resume());
      }
    } else if (type === FRAME.stdinEnd) {
      stdin?.end();
    } else if (type === FRAME.release) {
      setTimeout(() => {
        for (const s of out) s.destroy();
      }, PIPE_GRACE_MS).unref();
    }
  });
  sock.on('data', feed);
  if (rest.length > 0) feed(rest);
  // The daemon hung up (or died) before the command ended: nobody reads it any more.
  sock.on('close', () => {
    if (ended) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
    for (const s of out) s.destroy();
  });
}

async function handle(sock: Socket, req: LauncherRequest, rest: Buffer): Promise<void> {
  switch (req.op) {
    case 'start':
      return reply(sock, await start(req));
    case 'exec':
      return exec(sock, req, rest);
    case 'session':
      return reply(sock, await startSession(req));
    case 'kill':
      checkId(req.id);
      return reply(sock, await runCrun(['kill', req.id, req.signal]));
    case 'delete':
      checkId(req.id);
      return reply(sock, await runCrun(['delete', '-f', req.id]));
    case 'state':
      checkId(req.id);
      return reply(sock, await runCrun(['state', req.id]));
    case 'ps':
      checkId(req.id);
      return reply(sock, await runCrun(['ps', '--format', 'json', req.id]));
    case 'create':
      checkId(req.id);
      return reply(sock, await create(req.bundleDir, req.id));
    default:
      return reply(sock, { error: `unknown request ${JSON.stringify((req as { op?: unknown }).op)}` });
  }
}

const connections = new Set<Socket>();
const server = createServer((sock) => {
  connections.add(sock);
  sock.on('close', () => connections.delete(sock));
  sock.on('error', () => {});
  const onData = firstLine((line, rest) => {
    sock.off('data', onData);
    let req: LauncherRequest;
    try {
      req = JSON.parse(line) as LauncherRequest;
    } catch {
      return reply(sock, { error: 'the request is not JSON' });
    }
    handle(sock, req, rest).catch((err: Error) => {
      if (!sock.destroyed) reply(sock, { error: err.message });
    });
  });
  sock.on('data', onData);
});

try {
  unlinkSync(socketPath);
} catch {
  // no stale socket
}
// The socket is root's only, as everything it can do is. The umask is put back at once: the
// shims and crun inherit it, and crun makes directories inside machines.
const umask = process.umask(0o077);
server.listen(socketPath, () => {
  chmodSync(socketPath, 0o600);
  process.stdout.write('ready\n');
});
process.umask(umask);
server.on('error', (err) => {
  process.stderr.write(`hangar launcher: ${err.message}\n`);
  process.exit(1);
});

process.stdin.on('end', shutDown);
process.stdin.on('error', shutDown);
process.stdin.resume();

function shutDown(): void {
  server.close();
  spareShims.close();
  spareExecs.close();
  for (const sock of connections) sock.destroy();
  setImmediate(() => process.exit(0));
}
