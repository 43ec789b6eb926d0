import { Counter, Gauge, type Metric, type Registry } from 'prom-client';
import type { RouteTable } from './route-table.ts';

// The edge proxy's Prometheus series, per app and machine. Requests the proxy answers itself (no
// such app, nothing to wake) carry machine="". Request counts and latencies are plain numbers
// bumped on the hot path and turned into series only when scraped: prom-client's labelled
// metrics hash their labels on every update, which cost a sixth of a request's CPU here.

const LATENCY_BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** One machine's (or one app's proxy-answered) request tallies. */
export type RequestStats = {
  readonly app: string;
  readonly machine: string;
  readonly statuses: Map<number, number>;
  /** Per latency bound (not cumulative), plus one past the last. */
  readonly buckets: number[];
  sum: number;
  count: number;
};

export class ProxyMetrics {
  readonly #stats = new Map<string, RequestStats>();
  readonly #wakes: Counter<'app' | 'machine'>;
  readonly #autostops: Counter<'app' | 'machine' | 'action'>;

  constructor(registry: Registry, table: RouteTable) {
    registry.registerMetric(this.#series('hangar_proxy_requests_total', 'Requests through the edge proxy, by the status the client got', 'counter', (s) =>
      [...s.statuses].map(([status, value]) => ({ labels: { app: s.app, machine: s.machine, status: String(status) }, value })),
    ));
    registry.registerMetric(this.#series('hangar_proxy_request_duration_seconds', 'From the request reaching the proxy to its response headers going out (includes wakes and queueing)', 'histogram', (s) => {
      const labels = { app: s.app, machine: s.machine };
      let cumulative = 0;
      const buckets = LATENCY_BOUNDS.map((le, i) => {
        cumulative += s.buckets[i]!;
        return { metricName: 'hangar_proxy_request_duration_seconds_bucket', labels: { le, ...labels }, value: cumulative };
      });
      return [
        ...buckets,
        { metricName: 'hangar_proxy_request_duration_seconds_bucket', labels: { le: '+Inf', ...labels }, value: s.count },
        { metricName: 'hangar_proxy_request_duration_seconds_sum', labels, value: s.sum },
        { metricName: 'hangar_proxy_request_duration_seconds_count', labels, value: s.count },
      ];
    }));
    this.#wakes = new Counter({
      name: 'hangar_proxy_wakes_total',
      help: 'Machines started because a request needed them',
      labelNames: ['app', 'machine'],
      registers: [registry],
    });
    this.#autostops = new Counter({
      name: 'hangar_proxy_autostops_total',
      help: 'Machines stopped or suspended after being idle',
      labelNames: ['app', 'machine', 'action'],
      registers: [registry],
    });
    new Gauge({
      name: 'hangar_proxy_machine_load',
      help: 'Requests in flight plus open streams per machine',
      labelNames: ['app', 'machine'],
      registers: [registry],
      collect() {
        this.reset();
        for (const r of table.all()) this.set({ app: r.app, machine: r.id }, r.load);
      },
    });
  }

  /** The tallies for a machine's requests, or with machine "" for those the proxy answered itself. */
  statsFor(app: string, machine: string): RequestStats {
    const key = machine || `\0${app}`;
    let stats = this.#stats.get(key);
    if (!stats) this.#stats.set(key, (stats = { app, machine, statuses: new Map(), buckets: new Array<number>(LATENCY_BOUNDS.length + 1).fill(0), sum: 0, count: 0 }));
    return stats;
  }

  /** `startedAt` from performance.now(), taken when the request arrived. */
  answered(stats: RequestStats, status: number, startedAt: number): void {
    stats.statuses.set(status, (stats.statuses.get(status) ?? 0) + 1);
    const seconds = (performance.now() - startedAt) / 1000;
    let i = 0;
    while (i < LATENCY_BOUNDS.length && seconds > LATENCY_BOUNDS[i]!) i++;
    stats.buckets[i]!++;
    stats.sum += seconds;
    stats.count++;
  }

  woke(app: string, machine: string): void {
    this.#wakes.inc({ app, machine });
  }

  autostopped(app: string, machine: string, action: 'stop' | 'suspend'): void {
    this.#autostops.inc({ app, machine, action });
  }

  /** A series prom-client formats like its own, read from the tallies at scrape time. */
  #series(name: string, help: string, type: 'counter' | 'histogram', values: (s: RequestStats) => Array<{ metricName?: string; labels: Record<string, string | number>; value: number }>): Metric {
    const all = () => [...this.#stats.values()];
    return { name, help, type, get: async () => ({ name, help, type, aggregator: 'sum', values: all().flatMap(values) }) } as unknown as Metric;
  }
}
