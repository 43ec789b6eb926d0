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

/** The first cgroup2 mount in mountinfo text (on a hybrid host as on a pure v2 one): where, and its super options. */
export function cgroup2MountOf(mountinfo: string): { path: string; options: string[] } | undefined {
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    const [fstype, , superOptions] = right?.split(' ') ?? [];
    if (fstype !== 'cgroup2') continue;
    const path = left!.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
    return path === undefined ? undefined : { path, options: (superOptions ?? '').split(',') };
  }
  return undefined;
}

/**
 * A function that starts the grace period a cgroup move waits for; it never waits and never
 * fails. Without a cgroup2 mount it does nothing, and with `favordynmods` on it (scripts/setup.sh
 * sets it) there is no grace period to start: a move of this many-threaded process would then
 * only cost the start or exec it was meant to speed up.
 */
export function cgroupMoveWarmer(cgroup2: { path: string; options: string[] } | undefined): () => void {
  if (!cgroup2 || cgroup2.options.includes('favordynmods')) return () => {};
  return () => {
    let own: string | undefined;
    try {
      // Read each time: if someone moved this process, the old group must not get it back.
      own = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))?.slice(3);
    } catch {
      return;
    }
    // The write holds a libuv pool thread for the grace period, not the event loop.
    if (own !== undefined) writeFile(join(cgroup2.path, own, 'cgroup.procs'), String(process.pid)).catch(() => undefined);
  };
}
