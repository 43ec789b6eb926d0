import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

// A long-lived helper program whose output lines the daemon reads (conntrack's event stream, the
// kernel log). Started again if it exits: after a second, and twice as long each time it fails
// soon after starting (up to a minute), so one that cannot run does not fill the daemon's log; a
// program that is missing is reported once and left alone. It dies with the daemon, however the daemon ends (a parent-death
// signal set by util-linux's setpriv before it execs the program): a daemon killed with -9 must
// not leave readers behind.

export type LineProcess = { close(): void };

export function followProcess(command: string, args: string[], onLine: (line: string) => void, onProblem: (message: string) => void): LineProcess {
  let child: ChildProcess | undefined;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let delayMs = 500;
  const start = () => {
    const startedAt = Date.now();
    child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-500)));
    createInterface({ input: child.stdout! }).on('line', onLine);
    child.once('error', (err: NodeJS.ErrnoException) => {
      child = undefined;
      closed = true;
      onProblem(err.code === 'ENOENT' ? 'setpriv (util-linux) is not installed' : err.message);
    });
    child.once('exit', (code, signal) => {
      child = undefined;
      if (closed) return;
      onProblem(`${command} exited (${signal ?? code}): ${stderr.trim()}`);
      // setpriv's exit code when it cannot exec the program: it is not installed.
      if (code === 127) return void (closed = true);
      delayMs = Date.now() - startedAt > 60_000 ? 1000 : Math.min(60_000, delayMs * 2);
      timer = setTimeout(start, delayMs);
    });
  };
  start();
  return {
    close: () => {
      closed = true;
      clearTimeout(timer);
      child?.kill('SIGKILL');
    },
  };
}
