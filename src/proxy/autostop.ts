import type { Activity } from '../machines/activity.ts';
import type { MachineService } from '../machines/machine-service.ts';
import { formatDurationMs } from '../protocol/duration.ts';
import type { Route, RouteTable } from './route-table.ts';

// Stops machines nobody is using: a started machine whose service has autostop on, with no
// activity (activity.ts: no request or stream through the proxy, no API call, exec, console,
// transfer or log follow) for its app's idle period, is stopped, as long as the app keeps
// min_machines_running started. Hangar has no suspend yet, so autostop "suspend" stops too.

const SWEEP_MS = 1_000;

export type AutostopOptions = {
  table: RouteTable;
  machines: MachineService;
  activity: Activity;
  /** How long an app's machine may sit idle before it is stopped. */
  idleMsOf: (app: string) => number;
  onStop?: (route: Route, action: 'stop' | 'suspend') => void;
};

export class Autostop {
  readonly #opts: AutostopOptions;
  readonly #stopping = new Set<string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: AutostopOptions) {
    this.#opts = opts;
  }

  start(): void {
    this.#timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
  }

  sweep(now = Date.now()): void {
    const byApp = new Map<string, Route[]>();
    for (const r of this.#opts.table.all()) {
      if (r.state !== 'started') continue;
      const list = byApp.get(r.app);
      if (list) list.push(r);
      else byApp.set(r.app, [r]);
    }
    for (const [app, started] of byApp) {
      const idleMs = this.#opts.idleMsOf(app);
      const keep = Math.max(0, ...started.map((r) => r.minRunning));
      let running = started.length;
      const { activity } = this.#opts;
      // Longest idle first, so the machines kept are the ones used last.
      const idle = started
        .filter((r) => r.autostop !== 'off' && r.load === 0 && activity.idleMs(r.id, r.idleSince, now) >= idleMs && !this.#stopping.has(r.id))
        .sort((a, b) => activity.lastUsed(a.id, a.idleSince) - activity.lastUsed(b.id, b.idleSince));
      for (const r of idle) {
        if (running <= keep) break;
        running--;
        this.#stop(r, idleMs);
      }
    }
  }

  #stop(route: Route, idleMs: number): void {
    this.#stopping.add(route.id);
    // No request may pick it from now on; the machine's own state change follows shortly.
    route.state = 'stopping';
    this.#opts.onStop?.(route, route.autostop === 'suspend' ? 'suspend' : 'stop');
    this.#opts.machines
      .stop(route.app, route.id, { cause: { source: 'autostop', reason: { limit: formatDurationMs(idleMs) } } })
      .catch((err: Error) => process.stderr.write(`hangar: autostop of ${route.id} failed: ${err.message}\n`))
      .finally(() => this.#stopping.delete(route.id));
  }
}
