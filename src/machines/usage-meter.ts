import { readFileSync } from 'node:fs';
import type { Metric, Registry } from 'prom-client';
import type { InterfaceTraffic } from '../network/machine-network.ts';
import type { AppUsage, MachineUsage, UsageFigures } from '../protocol/usage.ts';
import { CgroupStats, cgroupHierarchies } from '../runtime/cgroup-stats.ts';
import { cgroupsPathFor } from '../runtime/oci-spec.ts';
import type { Store } from './store.ts';
import type { RunEnd, Span, StorageSpan } from './usage-store.ts';

// Usage by the second, read from the ledger (usage-store.ts): spans give seconds per state and
// what was held meanwhile; each run's end gives its CPU time and egress. A run still going is
// read live from its cgroup and veth, so a report "up to now" includes it.

export type UsageMeterDeps = {
  store: Store;
  traffic: (id: string) => Promise<InterfaceTraffic | undefined>;
};

type Window = { fromMs: number; toMs: number };

export class UsageMeter {
  readonly #store: Store;
  readonly #traffic: UsageMeterDeps['traffic'];
  readonly #cgroups = new CgroupStats(cgroupHierarchies(readFileSync('/proc/self/mountinfo', 'utf8')));

  constructor(deps: UsageMeterDeps) {
    this.#store = deps.store;
    this.#traffic = deps.traffic;
  }

  /**
   * Records what the machine's run used (the runner calls it as the run ends, before the cleanup
   * that removes what is left of its cgroups). A run that ended on its own is read from the group
   * that outlives crun (CgroupStats.runCpuSeconds); a second call for one run, after the cleanup,
   * finds no group and no new egress, and adds nothing.
   */
  async runEnded(machineId: string): Promise<void> {
    const m = this.#store.getMachine(machineId);
    if (!m) return;
    const [cpuSeconds, net] = await Promise.all([this.#cgroups.runCpuSeconds(cgroupsPathFor(m.id)), this.#traffic(m.id)]);
    if (cpuSeconds === undefined && !net) return;
    this.#store.usage.runEnded(m.id, m.app, Date.now(), cpuSeconds ?? 0, net?.txBytes);
  }

  async app(app: string, w: Window): Promise<AppUsage> {
    const nowMs = Date.now();
    const spans = this.#store.usage.spans({ app }, w.fromMs, w.toMs);
    const runs = [...this.#store.usage.runs({ app }, w.fromMs, w.toMs), ...(await this.#live(spans, w, nowMs))];
    const storage = this.#store.usage.storageSpans({ app }, w.fromMs, w.toMs);
    const ids = [...new Set([...spans.map((s) => s.machineId), ...runs.map((r) => r.machineId)])];
    const machines = ids.map((id) => ({
      machine_id: id,
      ...figures(spans.filter((s) => s.machineId === id), runs.filter((r) => r.machineId === id), storage.filter((s) => s.kind === 'checkpoint' && s.machineId === id), w, nowMs),
    }));
    return { app, ...iso(w), ...figures(spans, runs, storage, w, nowMs), machines };
  }

  async machine(app: string, machineId: string, w: Window): Promise<MachineUsage> {
    const nowMs = Date.now();
    const filter = { app, machineId };
    const spans = this.#store.usage.spans(filter, w.fromMs, w.toMs);
    const runs = [...this.#store.usage.runs(filter, w.fromMs, w.toMs), ...(await this.#live(spans, w, nowMs))];
    const storage = this.#store.usage.storageSpans(filter, w.fromMs, w.toMs).filter((s) => s.kind === 'checkpoint');
    return { machine_id: machineId, app, ...iso(w), ...figures(spans, runs, storage, w, nowMs) };
  }

  /** What runs going now used so far, when the window reaches now. */
  async #live(spans: Span[], w: Window, nowMs: number): Promise<RunEnd[]> {
    if (w.toMs < nowMs) return [];
    const started = spans.filter((s) => s.toMs === null && s.state === 'started');
    return Promise.all(started.map(async (s) => {
      const [cg, net] = await Promise.all([this.#cgroups.read(cgroupsPathFor(s.machineId)), this.#traffic(s.machineId)]);
      const sent = net ? this.#store.usage.sentSinceLastRun(s.machineId, net.txBytes) : 0;
      return { machineId: s.machineId, app: s.app, atMs: nowMs, cpuSeconds: cg?.cpuSeconds ?? 0, egressBytes: sent };
    }));
  }

  /** Totals per app since records began, as Prometheus counters, computed at each scrape. */
  register(registry: Registry): void {
    type Row = { app: string; u: UsageFigures };
    let scrape: Promise<Row[]> | undefined;
    const rows = () => {
      scrape ??= Promise.all(this.#store.usage.apps().map(async (app) => ({ app, u: await this.app(app, { fromMs: 0, toMs: Date.now() }) })))
        .finally(() => setImmediate(() => (scrape = undefined)));
      return scrape;
    };
    const counter = (name: string, help: string, pick: (r: Row) => Array<{ labels: Record<string, string>; value: number }>) => {
      const metric = {
        name, help, type: 'counter', aggregator: 'sum',
        get: async () => ({ name, help, type: 'counter', aggregator: 'sum', values: (await rows()).flatMap(pick) }),
      };
      registry.registerMetric(metric as unknown as Metric);
    };
    counter('hangar_usage_machine_seconds_total', "Seconds the app's machines spent in each state", (r) =>
      Object.entries(r.u.seconds).map(([state, value]) => ({ labels: { app: r.app, state }, value })));
    counter('hangar_usage_cpu_seconds_total', "CPU time the app's machines used", (r) => [{ labels: { app: r.app }, value: r.u.cpu_seconds }]);
    counter('hangar_usage_memory_mb_seconds_total', 'guest.memory_mb × seconds started', (r) => [{ labels: { app: r.app }, value: r.u.memory_mb_seconds }]);
    counter('hangar_usage_cpus_seconds_total', 'guest.cpus × seconds started', (r) => [{ labels: { app: r.app }, value: r.u.cpus_seconds }]);
    counter('hangar_usage_storage_gb_seconds_total', 'GB × seconds of rootfs disks, checkpoints and volumes', (r) => [
      { labels: { app: r.app, kind: 'rootfs' }, value: r.u.rootfs_gb_seconds },
      { labels: { app: r.app, kind: 'checkpoint' }, value: r.u.checkpoint_gb_seconds },
      { labels: { app: r.app, kind: 'volume' }, value: r.u.volume_gb_seconds },
    ]);
    counter('hangar_usage_egress_bytes_total', "Bytes the app's machines sent", (r) => [{ labels: { app: r.app }, value: r.u.egress_bytes }]);
  }
}

function figures(spans: Span[], runs: RunEnd[], storage: StorageSpan[], w: Window, nowMs: number): UsageFigures {
  const f: UsageFigures = {
    seconds: {}, cpu_seconds: 0, memory_mb_seconds: 0, cpus_seconds: 0, rootfs_gb_seconds: 0, checkpoint_gb_seconds: 0, volume_gb_seconds: 0, egress_bytes: 0,
  };
  for (const s of spans) {
    const secs = overlapSeconds(s.fromMs, s.toMs, w, nowMs);
    f.seconds[s.state] = round((f.seconds[s.state] ?? 0) + secs);
    f.rootfs_gb_seconds += s.diskGb * secs;
    if (s.state !== 'started') continue;
    f.memory_mb_seconds += s.memoryMb * secs;
    f.cpus_seconds += s.cpus * secs;
  }
  for (const r of runs) {
    f.cpu_seconds += r.cpuSeconds;
    f.egress_bytes += r.egressBytes;
  }
  for (const s of storage) {
    const gbSeconds = s.gb * overlapSeconds(s.fromMs, s.toMs, w, nowMs);
    if (s.kind === 'checkpoint') f.checkpoint_gb_seconds += gbSeconds;
    else f.volume_gb_seconds += gbSeconds;
  }
  return {
    ...f,
    cpu_seconds: round(f.cpu_seconds), memory_mb_seconds: round(f.memory_mb_seconds), cpus_seconds: round(f.cpus_seconds),
    rootfs_gb_seconds: round(f.rootfs_gb_seconds), checkpoint_gb_seconds: round(f.checkpoint_gb_seconds), volume_gb_seconds: round(f.volume_gb_seconds),
  };
}

function overlapSeconds(fromMs: number, toMs: number | null, w: Window, nowMs: number): number {
  const end = Math.min(toMs ?? nowMs, w.toMs, nowMs);
  return Math.max(0, end - Math.max(fromMs, w.fromMs)) / 1000;
}

/** Milliseconds are what the ledger holds; three decimals say all of it. */
function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function iso(w: Window): { from: string; to: string } {
  return { from: new Date(w.fromMs).toISOString(), to: new Date(Math.min(w.toMs, Date.now())).toISOString() };
}
