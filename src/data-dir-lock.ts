import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { HangarError } from './protocol/errors.ts';

// One daemon per data dir, held by an flock on <data-dir>/daemon.lock. Node has no flock(2), so
// util-linux's `flock -xn 3` takes it on a descriptor this process opened and lends the child as
// its fd 3: an flock belongs to the open file, not the process, so it stays held after the child
// exits, for as long as this process keeps the file open, and the kernel lets go of it when this
// process dies, SIGKILL included. Node opens files close-on-exec, so no machine or shim this
// process starts inherits the lock. Costs one short spawn (~2 ms) at start.

export type DataDirLock = { release(): void };

/** The lock, or undefined when another process holds it. */
export async function tryLockDataDir(dataDir: string): Promise<DataDirLock | undefined> {
  const fd = openSync(join(dataDir, 'daemon.lock'), 'a', 0o600);
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn('flock', ['--exclusive', '--nonblock', '3'], { stdio: ['ignore', 'ignore', 'pipe', fd] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('exit', (exitCode) => (exitCode === 0 || exitCode === 1 ? resolve(exitCode) : reject(new Error(stderr.trim() || `flock exited ${exitCode}`))));
  }).catch((err: Error) => {
    closeSync(fd);
    throw new HangarError('host_unsupported', `cannot lock the data dir ${dataDir}: ${err.message}`, {
      hint: 'install util-linux (it has flock) and run the daemon as root',
      cause: err,
    });
  });
  if (code !== 0) {
    closeSync(fd);
    return undefined;
  }
  let held = true;
  return {
    release: () => {
      if (held) closeSync(fd);
      held = false;
    },
  };
}
