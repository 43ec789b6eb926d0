// Every start and exec moves processes between cgroups (the shim or the exec into the machine's
// v2 group, crun into its v1 groups). A move, a write to cgroup.procs, takes the kernel's global
// cgroup_threadgroup_rwsem for writing, and once no move has happened for a few tens of ms the
// next one first waits out an RCU grace period (rcu_sync): 5–25 ms on these hosts, the largest
// single cost of a start or an exec. A move of this process into the group it is already in
// changes nothing but starts that grace period; made as a start or exec begins, the wait runs
// alongside the work before the first real move instead of in front of it.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The first cgroup2 mount point in mountinfo text (on a hybrid host as on a pure v2 one). */
export function cgroup2MountOf(mountinfo: string): string | undefined {
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (right?.split(' ')[0] === 'cgroup2') return left!.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
  }
  return undefined;
}

/**
 * A function that starts the grace period a cgroup move waits for; it never waits and never
 * fails. Without a cgroup2 mount it does nothing.
 */
export function cgroupMoveWarmer(cgroup2Mount: string | undefined): () => void {
  if (!cgroup2Mount) return () => {};
  return () => {
    let own: string | undefined;
    try {
      // Read each time: if someone moved this process, the old group must not get it back.
      own = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))?.slice(3);
    } catch {
      return;
    }
    // The write holds a libuv pool thread for the grace period, not the event loop.
    if (own !== undefined) writeFile(join(cgroup2Mount, own, 'cgroup.procs'), String(process.pid)).catch(() => undefined);
  };
}
