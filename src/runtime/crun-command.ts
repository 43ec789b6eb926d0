// How crun runs on this host. crun 1.8 refuses hosts with a cgroup2 mount next to cgroup v1
// controllers ("hybrid mode"); inside a private mount namespace without the cgroup2 mount it uses
// v1 cleanly, so on such hosts every crun call goes through the launcher (launcher-main.ts), which
// lives in such a namespace, and the machines' cgroup v2 groups are made there.
import { execFile } from 'node:child_process';
import { readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';

const run = promisify(execFile);

export type CrunCommand = {
  stateRoot: string;
  /** cgroup2 mount points to hide from crun; empty when the host is not hybrid. */
  hiddenCgroup2: string[];
};

function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/** cgroup2 mount points on a host that also mounts cgroup v1 controllers, from mountinfo text. */
export function hybridCgroup2Mounts(mountinfo: string): string[] {
  const v2: string[] = [];
  let hasV1 = false;
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fstype = right.split(' ')[0];
    if (fstype === 'cgroup') hasV1 = true;
    if (fstype === 'cgroup2') v2.push(unescapeMountPath(left.split(' ')[4] ?? ''));
  }
  return hasV1 ? v2.filter(Boolean) : [];
}

export function detectCrunCommand(stateRoot: string): CrunCommand {
  return { stateRoot, hiddenCgroup2: hybridCgroup2Mounts(readFileSync('/proc/self/mountinfo', 'utf8')) };
}

/**
 * Removes a machine's v2 group (the launcher made it) once the machine is gone; from here, where
 * the hierarchy is mounted. False while processes are still leaving it (EBUSY): try again later.
 */
export function removeCgroup2Group(cmd: CrunCommand, cgroupPath: string): boolean {
  const v2 = cmd.hiddenCgroup2[0];
  if (!v2) return true;
  try {
    rmdirSync(join(v2, cgroupPath));
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'EBUSY'; // gone already, or not ours to wait for
  }
}

/** `crun --version`: what it says is part of the seccomp cache key. Runs anywhere, so not through the launcher. */
export async function crunVersion(): Promise<string> {
  try {
    return (await run('crun', ['--version'])).stdout;
  } catch (err) {
    throw new HangarError('host_unsupported', `crun does not run: ${(err as Error).message}`, {
      hint: 'install the runtime packages: apt-get install crun tini util-linux containers-common',
      cause: err,
    });
  }
}
