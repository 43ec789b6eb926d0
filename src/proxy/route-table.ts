import type { MachineRecord } from '../machines/store.ts';
import type { MachineState } from '../protocol/states.ts';

// What the proxy knows about each machine with a service, kept in memory and updated on every
// state change, so a request costs no database read. Load counts live here too: they are what
// load balancing, hard-limit queueing and autostop all look at.

export type AutostopMode = 'off' | 'stop' | 'suspend';

// Fly's defaults when a service sets no concurrency.
const DEFAULT_SOFT_LIMIT = 20;
const DEFAULT_HARD_LIMIT = 25;

export type Route = {
  readonly id: string;
  readonly app: string;
  state: MachineState;
  ip: string;
  port: number;
  /** `http://ip:port`, the key of the upstream connection pool. */
  origin: string;
  autostart: boolean;
  /** A port of its service says force_https: plain-HTTP requests are redirected. */
  forceHttps: boolean;
  autostop: AutostopMode;
  minRunning: number;
  softLimit: number;
  hardLimit: number;
  /**
   * concurrency.type "connections" (Fly's default): a client connection holds its machine, and
   * counts as load, from its first request until it closes. "requests": each request does.
   */
  countsConnections: boolean;
  /** Client connections or requests in flight, plus open streams (a response still sending, a WebSocket). */
  load: number;
  /** Since when the machine has had no load (or since it was seen starting); autostop reads it. */
  idleSince: number;
  /**
   * Started, but its port has not accepted a connection yet: requests wait for it (until
   * `bootDeadline`) rather than meet a refused connection while its server boots.
   */
  booting: boolean;
  bootDeadline: number;
};

/** How long a started machine's port is waited for, on a wake or after any start. */
export const BOOT_DEADLINE_MS = 10_000;

type ServiceConfig = {
  internal_port?: number;
  autostart?: boolean;
  autostop?: boolean | AutostopMode;
  min_machines_running?: number;
  concurrency?: { type?: 'connections' | 'requests'; soft_limit?: number; hard_limit?: number };
  ports?: Array<{ force_https?: boolean }>;
};

export class RouteTable {
  readonly #byId = new Map<string, Route>();
  readonly #byApp = new Map<string, Route[]>();
  readonly #removed: Array<(route: Route) => void> = [];

  constructor(machines: Iterable<MachineRecord>) {
    for (const m of machines) this.update(m);
    // Machines found started when the daemon starts have long been serving, or never will.
    for (const r of this.#byId.values()) r.booting = false;
  }

  /** The app's machines that have a service, in no particular order; empty when none. */
  routes(app: string): readonly Route[] {
    return this.#byApp.get(app) ?? NONE;
  }

  get(id: string): Route | undefined {
    return this.#byId.get(id);
  }

  all(): IterableIterator<Route> {
    return this.#byId.values();
  }

  /** Takes in a machine's new record (or its absence); load counts carry over. */
  update(m: MachineRecord | undefined, id = m?.id): void {
    if (!id) return;
    const service = m && m.state !== 'destroyed' && m.privateIp ? serviceOf(m) : undefined;
    const existing = this.#byId.get(id);
    if (!m || !service) {
      if (existing) this.#remove(existing);
      return;
    }
    const port = service.internal_port!;
    const soft = service.concurrency?.soft_limit ?? Math.min(DEFAULT_SOFT_LIMIT, service.concurrency?.hard_limit ?? DEFAULT_SOFT_LIMIT);
    const fields = {
      state: m.state,
      ip: m.privateIp,
      port,
      origin: `http://${m.privateIp}:${port}`,
      autostart: service.autostart !== false,
      forceHttps: service.ports?.some((p) => p.force_https === true) ?? false,
      autostop: service.autostop === true ? 'stop' : service.autostop === false || service.autostop === undefined ? 'off' : service.autostop,
      minRunning: service.min_machines_running ?? 0,
      softLimit: soft,
      hardLimit: service.concurrency?.hard_limit ?? Math.max(DEFAULT_HARD_LIMIT, soft),
      countsConnections: service.concurrency?.type !== 'requests',
    } satisfies Partial<Route>;
    if (existing) {
      if (existing.state !== 'started' && m.state === 'started') {
        existing.idleSince = Date.now();
        existing.booting = true;
        existing.bootDeadline = Date.now() + BOOT_DEADLINE_MS;
      }
      Object.assign(existing, fields);
      return;
    }
    const booting = m.state === 'started';
    const route: Route = { id, app: m.app, ...fields, load: 0, idleSince: Date.now(), booting, bootDeadline: Date.now() + BOOT_DEADLINE_MS };
    this.#byId.set(id, route);
    const list = this.#byApp.get(m.app);
    if (list) list.push(route);
    else this.#byApp.set(m.app, [route]);
  }

  /** Called with each route that goes (its machine destroyed, or no longer serving). */
  onRemove(listener: (route: Route) => void): void {
    this.#removed.push(listener);
  }

  #remove(route: Route): void {
    for (const listener of this.#removed) listener(route);
    this.#byId.delete(route.id);
    const rest = (this.#byApp.get(route.app) ?? []).filter((r) => r !== route);
    if (rest.length) this.#byApp.set(route.app, rest);
    else this.#byApp.delete(route.app);
  }
}

const NONE: readonly Route[] = Object.freeze([]);

function serviceOf(m: MachineRecord): ServiceConfig | undefined {
  return (m.config.services as ServiceConfig[] | undefined)?.find((s) => typeof s.internal_port === 'number');
}
