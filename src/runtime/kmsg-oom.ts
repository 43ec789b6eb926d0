// Remembers which cgroups the kernel OOM-killed in. crun removes a machine's cgroup when it exits,
// so its memory.oom_control is gone by then; the kernel log (/dev/kmsg) keeps the record.
// Read on demand and non-blocking: a blocking read would pin a libuv pool thread forever.
import { closeSync, constants, openSync, readSync } from 'node:fs';

// oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/hangar/<id>,task_memcg=/hangar/<id>,task=sh,pid=1,uid=0
const OOM_KILL = /oom-kill:.*\boom_memcg=([^,\s]+)/;

/** Parses one /dev/kmsg record: `prio,seq,usec,flags;message`. */
export function parseOomRecord(record: string): { cgroup: string; atSec: number } | undefined {
  const semi = record.indexOf(';');
  if (semi < 0) return undefined;
  const match = OOM_KILL.exec(record.slice(semi + 1));
  if (!match) return undefined;
  const usec = Number(record.slice(0, semi).split(',')[2]);
  return Number.isFinite(usec) ? { cgroup: match[1]!, atSec: usec / 1e6 } : undefined;
}

export class KmsgOomLog {
  #fd: number | undefined;
  #unavailable = false;
  /** cgroup path → kernel times (seconds since boot) of its OOM kills. */
  #kills = new Map<string, number[]>();
  readonly #buf = Buffer.alloc(16 * 1024);

  /** True if the kernel logged an OOM kill in `cgroup` at or after `sinceSec` (seconds since boot). */
  sawOomKill(cgroup: string, sinceSec: number): boolean {
    this.#drain();
    return (this.#kills.get(cgroup) ?? []).some((at) => at >= sinceSec);
  }

  forget(cgroup: string): void {
    this.#kills.delete(cgroup);
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #drain(): void {
    if (this.#unavailable) return;
    if (this.#fd === undefined) {
      try {
        this.#fd = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
      } catch {
        // Without the kernel log OOM kills are reported as plain exits (137).
        this.#unavailable = true;
        return;
      }
    }
    for (;;) {
      let n: number;
      try {
        n = readSync(this.#fd, this.#buf, 0, this.#buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue; // records were overwritten before we read them; go on from the oldest kept
        if (code === 'EAGAIN') return;
        throw err;
      }
      if (n <= 0) return;
      const oom = parseOomRecord(this.#buf.toString('utf8', 0, n));
      if (oom) this.#remember(oom.cgroup, oom.atSec);
    }
  }

  #remember(cgroup: string, atSec: number): void {
    const list = this.#kills.get(cgroup) ?? [];
    list.push(atSec);
    // Only recent kills matter (one run of a machine); keep the list short for long-lived daemons.
    if (list.length > 16) list.shift();
    this.#kills.set(cgroup, list);
  }
}
