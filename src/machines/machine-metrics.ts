import { readFileSync } from 'node:fs';
import type { Metric, Registry } from 'prom-client';
import type { MachineMetrics as MachineMetricsView } from '../protocol/machine-metrics.ts';
import type { InterfaceTraffic } from '../network/machine-network.ts';
import { CgroupStats, cgroupHierarchies, type CgroupReading } from '../runtime/cgroup-stats.ts';
import { cgroupsPathFor } from '../runtime/oci-spec.ts';
import type { DiskUsage } from '../storage/machine-disk.ts';
import type { MachineRecord } from './store.ts';

// A machine's resource use, for GET …/metrics and as Prometheus series on GET /metrics. Read
// when asked, never sampled in the background: cgroup files and interface counters cost a few
// reads each, and nothing is spent on machines nobody looks at.

export type MachineMetricsDeps = {
  /** Machines in every app, for the Prometheus series. */
  machines: () => MachineRecord[];
  disk: (m: MachineRecord) => DiskUsage | undefined;
  traffic: (id: string) => Promise<InterfaceTraffic | undefined>;
};

type Sample = { labels: Record<string, string>; value: number };

export class MachineMetrics {
  readonly #deps: MachineMetricsDeps;
  readonly #cgroups = new CgroupStats(cgroupHierarchies(readFileSync('/proc/self/mountinfo', 'utf8')));

  constructor(deps: MachineMetricsDeps) {
    this.#deps = deps;
  }

  /** CPU, memory and processes while it runs; disk and network whenever it has them. */
  async read(m: MachineRecord): Promise<MachineMetricsView> {
    const [cg, net] = await Promise.all([m.state === 'started' ? this.#cgroups.read(cgroupsPathFor(m.id)) : undefined, this.#deps.traffic(m.id)]);
    const disk = this.#deps.disk(m);
    const cpus = m.config.guest?.cpus;
    return {
      machine_id: m.id,
      app: m.app,
      state: m.state,
      at: new Date().toISOString(),
      cpu: cg ? { usage_seconds: cg.cpuSeconds, user_seconds: cg.cpuUserSeconds, system_seconds: cg.cpuSystemSeconds, ...(cpus ? { limit_cpus: cpus } : {}) } : null,
      memory: cg
        ? {
            current_bytes: cg.memoryBytes,
            ...(cg.memoryPeakBytes !== undefined ? { peak_bytes: cg.memoryPeakBytes } : {}),
            ...(cg.memoryLimitBytes !== undefined ? { limit_bytes: cg.memoryLimitBytes } : {}),
          }
        : null,
      pids: cg ? { current: cg.pids, ...(cg.pidsLimit !== undefined ? { limit: cg.pidsLimit } : {}) } : null,
      disk: disk ? { used_bytes: disk.usedBytes, size_bytes: disk.sizeBytes } : null,
      network: net ? { rx_bytes: net.rxBytes, tx_bytes: net.txBytes, rx_packets: net.rxPackets, tx_packets: net.txPackets } : null,
    };
  }

  /** Series per started machine, labelled app and machine, read at each scrape. */
  register(registry: Registry): void {
    type Row = { labels: Record<string, string>; cg?: CgroupReading; disk?: DiskUsage; net?: InterfaceTraffic };
    // One read of every started machine per scrape, shared by all the series below.
    let scrape: Promise<Row[]> | undefined;
    const rows = () => {
      scrape ??= this.#scrape().finally(() => setImmediate(() => (scrape = undefined)));
      return scrape;
    };
    const series = (name: string, help: string, type: 'gauge' | 'counter', pick: (r: Row) => number | undefined) => {
      const metric = {
        name, help, type, aggregator: 'sum',
        get: async () => ({
          name, help, type, aggregator: 'sum',
          values: (await rows()).flatMap((r): Sample[] => {
            const value = pick(r);
            return value === undefined ? [] : [{ labels: r.labels, value }];
          }),
        }),
      };
      registry.registerMetric(metric as unknown as Metric);
    };
    series('hangar_machine_cpu_seconds_total', 'CPU time of the machine\'s processes this run (user + system)', 'counter', (r) => r.cg?.cpuSeconds);
    series('hangar_machine_memory_bytes', 'Memory charged to the machine (page cache and /dev/shm included)', 'gauge', (r) => r.cg?.memoryBytes);
    series('hangar_machine_memory_peak_bytes', 'The most memory charged to the machine at once this run', 'gauge', (r) => r.cg?.memoryPeakBytes);
    series('hangar_machine_memory_limit_bytes', 'The machine\'s memory limit (guest.memory_mb)', 'gauge', (r) => r.cg?.memoryLimitBytes);
    series('hangar_machine_pids', 'Processes and threads in the machine', 'gauge', (r) => r.cg?.pids);
    series('hangar_machine_disk_used_bytes', 'Used on the machine\'s own disk', 'gauge', (r) => r.disk?.usedBytes);
    series('hangar_machine_disk_size_bytes', 'Size of the machine\'s own disk', 'gauge', (r) => r.disk?.sizeBytes);
    series('hangar_machine_network_receive_bytes_total', 'Bytes the machine received on eth0', 'counter', (r) => r.net?.rxBytes);
    series('hangar_machine_network_transmit_bytes_total', 'Bytes the machine sent from eth0', 'counter', (r) => r.net?.txBytes);
  }

  async #scrape() {
    const started = this.#deps.machines().filter((m) => m.state === 'started');
    return Promise.all(started.map(async (m) => {
      const [cg, net] = await Promise.all([this.#cgroups.read(cgroupsPathFor(m.id)), this.#deps.traffic(m.id)]);
      return { labels: { app: m.app, machine: m.id }, cg, disk: this.#deps.disk(m), net };
    }));
  }
}
