// How to invoke crun on this host. crun 1.8 refuses hosts with a cgroup2 mount next to cgroup v1
// controllers ("hybrid mode"); inside a private mount namespace without the cgroup2 mount it uses
// v1 cleanly, so on such hosts every cgroup-touching call is prefixed with that namespace.
import { execFile } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';

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

// Unmounts the listed paths (up to `--`) and execs the rest, keeping the pid: the caller's pid is crun's.
// Before that, a caller that passes fd 3 (the machine's cgroup.procs, see openCgroup2Group) is moved
// into the machine's cgroup v2 group, which crun does not manage on such hosts.
const HIDE_AND_EXEC = '{ echo $$ >&3; } 2>/dev/null; exec 3>&-; while [ "$1" != -- ]; do umount "$1" || exit 125; shift; done; shift; exec "$@"';

/** argv that runs `argv` with crun able to see cgroups the way it wants; first element is the program. */
export function inCrunNamespace(cmd: CrunCommand, argv: string[]): string[] {
  if (cmd.hiddenCgroup2.length === 0) return argv;
  return ['unshare', '-m', '--propagation', 'slave', 'sh', '-c', HIDE_AND_EXEC, 'hangar-ns', ...cmd.hiddenCgroup2, '--', ...argv];
}

/**
 * On a hybrid host: the machine's own group in the cgroup v2 hierarchy (made if missing), its
 * cgroup.procs open for writing, to hand a crun call as fd 3. Without it the machine's processes
 * would sit at the v2 root, and a cgroup2 mounted from inside would be the host's whole tree.
 */
export function openCgroup2Group(cmd: CrunCommand, cgroupPath: string): number | undefined {
  const v2 = cmd.hiddenCgroup2[0];
  if (!v2) return undefined;
  const group = join(v2, cgroupPath);
  mkdirSync(group, { recursive: true });
  return openSync(join(group, 'cgroup.procs'), 'w');
}

export function removeCgroup2Group(cmd: CrunCommand, cgroupPath: string): void {
  const v2 = cmd.hiddenCgroup2[0];
  if (!v2) return;
  try {
    rmdirSync(join(v2, cgroupPath));
  } catch {
    // already gone, or a process still leaving it
  }
}

export function crunArgv(cmd: CrunCommand, args: string[]): string[] {
  return ['crun', '--root', cmd.stateRoot, ...args];
}

export type RunResult = { code: number; stdout: string; stderr: string };

/** Runs a short crun subcommand (kill, delete, state) to completion. */
export function runCrun(cmd: CrunCommand, args: string[], opts: { namespaced: boolean; timeoutMs?: number }): Promise<RunResult> {
  const argv = crunArgv(cmd, args);
  const [file, ...rest] = opts.namespaced ? inCrunNamespace(cmd, argv) : argv;
  return new Promise((resolve, reject) => {
    execFile(file!, rest, { timeout: opts.timeoutMs ?? 10_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(
          new HangarError('runtime_error', `crun ${args[0]} failed to run: ${err.message}`, {
            hint: 'check that crun and unshare are installed and that the daemon runs as root',
            cause: err,
          }),
        );
        return;
      }
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}
