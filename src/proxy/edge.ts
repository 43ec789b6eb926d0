import type { Registry } from 'prom-client';
import type { Activity } from '../machines/activity.ts';
import type { AppService } from '../machines/app-service.ts';
import type { MachineService } from '../machines/machine-service.ts';
import type { StateWaiters } from '../machines/state-waiters.ts';
import type { Store } from '../machines/store.ts';
import { Autostop } from './autostop.ts';
import { createEdgeProxy, type EdgeProxy, type EdgeProxyOptions } from './edge-proxy.ts';
import { ProxyMetrics } from './proxy-metrics.ts';
import { RouteTable } from './route-table.ts';

// The edge as the daemon runs it: the proxy, the in-memory route table it reads (fed by every
// machine state change), autostop sweeping that table, and their metrics.

export type EdgeOptions = Pick<EdgeProxyOptions, 'domain' | 'headerTimeoutMs' | 'idleTimeoutMs' | 'appForHostname' | 'maxConnections' | 'maxConnectionsPerClient' | 'replayBufferBytes'> & {
  store: Store;
  waiters: StateWaiters;
  apps: AppService;
  machines: MachineService;
  registry: Registry;
  /** What counts as use of a machine besides the proxy's own traffic (API calls, execs, ...). */
  activity: Activity;
  /** An app's autostop idle period. */
  idleMsOf: (app: string) => number;
};

export type Edge = { proxy: EdgeProxy; close(): Promise<void> };

export function createEdge(opts: EdgeOptions): Edge {
  const table = new RouteTable(opts.store.listMachines());
  opts.waiters.onChange((change) => table.update(opts.store.getMachine(change.id), change.id));
  const metrics = new ProxyMetrics(opts.registry, table);
  const autostop = new Autostop({
    table,
    machines: opts.machines,
    activity: opts.activity,
    idleMsOf: opts.idleMsOf,
    onStop: (route, action) => metrics.autostopped(route.app, route.id, action),
  });
  autostop.start();
  const proxy = createEdgeProxy({ ...opts, table, metrics });
  return {
    proxy,
    close: async () => {
      autostop.close();
      await proxy.close();
    },
  };
}
