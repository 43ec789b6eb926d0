// What a machine's cgroups say it uses: CPU time, memory, processes. A machine's group is
// `cgroupsPathFor(id)` in every hierarchy. On a hybrid host (cgroup v1 controllers next to a
// cgroup2 mount; see crun-command.ts) crun puts the machine in the v1 controllers and the launcher
// adds a v2 group of the same path, which has no controllers; on a pure v2 host crun's group has
// them all. So each figure is read from the v1 controller's group when that controller is mounted
// as v1, else from the v2 group. Nothing here writes to a cgroup.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export type CgroupReading = {
  /** CPU time of every process the machine ran this run (user + system), seconds. */
  cpuSeconds: number;
  cpuUserSeconds: number;
  cpuSystemSeconds: number;
  /** Memory charged to the machine now (page cache and shared memory included), bytes. */
  memoryBytes: number;
  /** The most it was charged at once this run; absent where the kernel keeps no peak. */
  memoryPeakBytes?: number;
  /** Its memory limit; absent when unlimited. */
  memoryLimitBytes?: number;
  pids: number;
  pidsLimit?: number;
};

type Hierarchies = { v2?: string; v1: Map<string, string> };

const USER_HZ = 100;
/** A v1 "no limit" is the largest page-aligned signed 64-bit value; anything this big is unlimited. */
const UNLIMITED_FROM = 2 ** 60;

/** Where the cgroup hierarchies are mounted, from mountinfo text. */
export function cgroupHierarchies(mountinfo: string): Hierarchies {
  const found: Hierarchies = { v1: new Map() };
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const [fstype, , superOpts = ''] = right.split(' ');
    const mountPoint = unescape(left.split(' ')[4] ?? '');
    if (fstype === 'cgroup2') found.v2 ??= mountPoint;
    if (fstype !== 'cgroup') continue;
    for (const opt of superOpts.split(',')) {
      if (['cpuacct', 'memory', 'pids'].includes(opt) && !found.v1.has(opt)) found.v1.set(opt, mountPoint);
    }
  }
  return found;
}

export class CgroupStats {
  readonly #h: Hierarchies;

  constructor(hierarchies: Hierarchies) {
    this.#h = hierarchies;
  }

  /** The group's figures; undefined when it does not exist (the machine is not running). */
  async read(cgroupPath: string): Promise<CgroupReading | undefined> {
    const [cpu, memory, pids] = await Promise.all([this.#cpu(cgroupPath), this.#memory(cgroupPath), this.#pids(cgroupPath)]);
    if (!cpu || !memory || !pids) return undefined;
    return { ...cpu, ...memory, ...pids };
  }

  /**
   * CPU time of the machine's run so far, also after its end. `crun run` removes the machine's
   * group (and with it the figure) the moment the init exits, so a run that ended on its own has
   * no group left to read. On a hybrid host the launcher's v2 group of the same path outlives
   * crun (the daemon removes it at cleanup), and its cpu.stat, kept by the kernel with or without
   * a cpu controller, counted the same processes plus the shim, `crun run` and multilog (a few
   * ms a run). On a pure v2 host nothing outlives crun's group: undefined then.
   */
  async runCpuSeconds(cgroupPath: string): Promise<number | undefined> {
    const cpu = await this.#cpu(cgroupPath);
    if (cpu) return cpu.cpuSeconds;
    if (!this.#h.v1.has('cpuacct')) return undefined;
    const stat = await this.#v2(cgroupPath, 'cpu.stat');
    return stat === undefined ? undefined : (keyValues(stat).get('usage_usec') ?? 0) / 1e6;
  }

  async #cpu(path: string): Promise<Pick<CgroupReading, 'cpuSeconds' | 'cpuUserSeconds' | 'cpuSystemSeconds'> | undefined> {
    const v1 = this.#h.v1.get('cpuacct');
    if (v1) {
      const dir = join(v1, path);
      const [usage, stat] = await Promise.all([readText(join(dir, 'cpuacct.usage')), readText(join(dir, 'cpuacct.stat'))]);
      if (usage === undefined || stat === undefined) return undefined;
      const kv = keyValues(stat);
      return { cpuSeconds: Number(usage) / 1e9, cpuUserSeconds: (kv.get('user') ?? 0) / USER_HZ, cpuSystemSeconds: (kv.get('system') ?? 0) / USER_HZ };
    }
    const stat = await this.#v2(path, 'cpu.stat');
    if (stat === undefined) return undefined;
    const kv = keyValues(stat);
    return { cpuSeconds: (kv.get('usage_usec') ?? 0) / 1e6, cpuUserSeconds: (kv.get('user_usec') ?? 0) / 1e6, cpuSystemSeconds: (kv.get('system_usec') ?? 0) / 1e6 };
  }

  async #memory(path: string): Promise<Pick<CgroupReading, 'memoryBytes' | 'memoryPeakBytes' | 'memoryLimitBytes'> | undefined> {
    const v1 = this.#h.v1.get('memory');
    const [current, peak, limit] = v1
      ? await Promise.all(['memory.usage_in_bytes', 'memory.max_usage_in_bytes', 'memory.limit_in_bytes'].map((f) => readText(join(v1, path, f))))
      : await Promise.all(['memory.current', 'memory.peak', 'memory.max'].map((f) => this.#v2(path, f)));
    if (current === undefined) return undefined;
    return { memoryBytes: Number(current), ...optional('memoryPeakBytes', peak), ...optional('memoryLimitBytes', limit) };
  }

  async #pids(path: string): Promise<Pick<CgroupReading, 'pids' | 'pidsLimit'> | undefined> {
    const v1 = this.#h.v1.get('pids');
    const [current, limit] = v1
      ? await Promise.all(['pids.current', 'pids.max'].map((f) => readText(join(v1, path, f))))
      : await Promise.all(['pids.current', 'pids.max'].map((f) => this.#v2(path, f)));
    if (current === undefined) return undefined;
    return { pids: Number(current), ...optional('pidsLimit', limit) };
  }

  #v2(path: string, file: string): Promise<string | undefined> {
    return this.#h.v2 ? readText(join(this.#h.v2, path, file)) : Promise.resolve(undefined);
  }
}

async function readText(path: string): Promise<string | undefined> {
  return readFile(path, 'utf8').then((t) => t.trim(), () => undefined);
}

/** `key value` lines (cpu.stat, cpuacct.stat). */
function keyValues(text: string): Map<string, number> {
  return new Map(text.split('\n').map((l) => l.trim().split(/\s+/)).filter((p) => p.length === 2).map(([k, v]) => [k!, Number(v)]));
}

/** A figure that may be missing, "max" or v1's "unlimited" value: then left out. */
function optional<K extends string>(key: K, raw: string | undefined): Partial<Record<K, number>> {
  if (raw === undefined || raw === 'max') return {};
  const n = Number(raw);
  return Number.isFinite(n) && n < UNLIMITED_FROM ? ({ [key]: n } as Record<K, number>) : {};
}

function unescape(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}
