import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { RouteTable } from './route-table.ts';

// The edge proxy's Prometheus series, per app and machine. Requests the proxy answers itself (no
// such app, nothing to wake) carry machine="".

export class ProxyMetrics {
  readonly #requests: Counter<'app' | 'machine' | 'status'>;
  readonly #latency: Histogram<'app' | 'machine'>;
  readonly #wakes: Counter<'app' | 'machine'>;
  readonly #autostops: Counter<'app' | 'machine' | 'action'>;

  constructor(registry: Registry, table: RouteTable) {
    this.#requests = new Counter({
      name: 'hangar_proxy_requests_total',
      help: 'Requests through the edge proxy, by the status the client got',
      labelNames: ['app', 'machine', 'status'],
      registers: [registry],
    });
    this.#latency = new Histogram({
      name: 'hangar_proxy_request_duration_seconds',
      help: 'From the request reaching the proxy to its response headers reaching the client (includes wakes)',
      labelNames: ['app', 'machine'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
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

  /** `startedAt` from performance.now(), taken when the request arrived. */
  answered(app: string, machine: string, status: number, startedAt: number): void {
    this.#requests.inc({ app, machine, status: String(status) });
    this.#latency.observe({ app, machine }, (performance.now() - startedAt) / 1000);
  }

  woke(app: string, machine: string): void {
    this.#wakes.inc({ app, machine });
  }

  autostopped(app: string, machine: string, action: 'stop' | 'suspend'): void {
    this.#autostops.inc({ app, machine, action });
  }
}
