import { connect } from 'node:net';
import { HangarError } from '../protocol/errors.ts';
import type { Activity } from '../machines/activity.ts';
import type { AppService } from '../machines/app-service.ts';
import type { MachineService } from '../machines/machine-service.ts';
import { BOOT_DEADLINE_MS, type Route, type RouteTable } from './route-table.ts';

// Which machine of an app takes a request. The least-loaded started machine under its soft limit;
// when every started one is over it, a stopped one is woken (autostart, on by default as on Fly)
// for the requests to come, while this one goes to a started machine under its hard limit. With
// none started the request waits for the woken machine's port; with all at their hard limit it
// queues briefly, then gets 503. A machine that has just started (whoever started it) gets
// requests once its port accepts a connection, not before.

export type Picked = { route: Route; release: () => void };

export const QUEUE_MS = 3_000;
const WAKEABLE = new Set(['stopped', 'created', 'suspended']);
/** A machine on its way down (autostop) is woken once it is down. */
const SETTLING_DOWN = new Set(['stopping', 'suspending']);

export type TargetsOptions = {
  table: RouteTable;
  machines: MachineService;
  apps: AppService;
  activity: Activity;
  onWake?: (route: Route) => void;
};

export class Targets {
  readonly #opts: TargetsOptions;
  readonly #waking = new Map<string, Promise<void>>();
  /** Requests waiting for a slot under an app's hard limits, woken as load is released. */
  readonly #queues = new Map<string, Array<() => void>>();

  constructor(opts: TargetsOptions) {
    this.#opts = opts;
  }

  /**
   * The common case without waiting: a started machine under its soft limit (or the preferred
   * one under its hard limit). Undefined when `pick` has more to do.
   */
  tryPick(app: string, opts: { prefer?: string; exclude?: string }): Picked | undefined {
    let best: Route | undefined;
    for (const r of this.#opts.table.routes(app)) {
      if (r.state !== 'started' || r.booting || r.id === opts.exclude) continue;
      if (r.id === opts.prefer && r.load < r.hardLimit) return this.#acquire(r);
      if (r.load < r.softLimit && (!best || r.load < best.load)) best = r;
    }
    return best && this.#acquire(best);
  }

  /**
   * The machine for a request to `app`, with its load already counted: call `release` when the
   * request (or stream) ends. `force` names the one machine to use (woken if need be, never
   * another); `prefer` names one to use if it is started; `exclude` skips one (a replay asked
   * for "elsewhere").
   */
  async pick(app: string, opts: { force?: string; prefer?: string; exclude?: string } = {}): Promise<Picked> {
    const routes = this.#opts.table.routes(app);
    if (routes.length === 0) {
      this.#opts.apps.get(app);
      throw new HangarError('route_not_found', `app ${app} has no machine with a service`, {
        hint: 'give a machine config.services: [{"internal_port": 8080, "ports": [{"port": 80, "handlers": ["http"]}]}]',
      });
    }
    if (opts.force) return this.#forced(app, routes, opts.force);
    const deadline = Date.now() + QUEUE_MS;
    for (;;) {
      const quick = this.tryPick(app, opts);
      if (quick) return quick;
      let bestUnderHard: Route | undefined;
      let booting: Route | undefined;
      let sleeper: Route | undefined;
      let started = 0;
      for (const r of routes) {
        if (r.id === opts.exclude) continue;
        if (r.state === 'started') {
          started++;
          if (r.booting) {
            if (!booting || r.load < booting.load) booting = r;
          } else if (r.load < r.hardLimit && (!bestUnderHard || r.load < bestUnderHard.load)) {
            bestUnderHard = r;
          }
        } else if (!sleeper && r.autostart && (WAKEABLE.has(r.state) || SETTLING_DOWN.has(r.state))) {
          sleeper = r;
        }
      }
      if (bestUnderHard) {
        // More capacity for what comes next (unless some is already booting); this request need
        // not wait for it.
        if (sleeper && !booting) this.#wake(sleeper).catch(() => undefined);
        return this.#acquire(bestUnderHard);
      }
      if (booting) {
        await this.#listening(booting);
        return this.#acquire(booting);
      }
      if (sleeper) {
        await this.#wake(sleeper);
        return this.#acquire(sleeper);
      }
      if (started === 0) {
        throw new HangarError('invalid_state', `app ${app} has no started machine and none to wake`, {
          hint: 'start a machine (POST …/start), or set services[].autostart to true',
        });
      }
      if (!(await this.#queue(app, deadline))) {
        throw new HangarError('over_capacity', `every started machine of app ${app} is at its hard limit and none could be woken`, {
          hint: 'retry shortly; or raise services[].concurrency.hard_limit, or add machines (autostart wakes stopped ones)',
          details: { app, queued_ms: QUEUE_MS },
        });
      }
    }
  }

  async #forced(app: string, routes: readonly Route[], id: string): Promise<Picked> {
    const forced = routes.find((r) => r.id === id);
    if (!forced) {
      throw new HangarError('machine_not_found', `app ${app} has no machine ${id} with a service`, {
        hint: 'fly-force-instance-id must name a machine of this app that has config.services; list them with GET /v1/apps/{app}/machines',
      });
    }
    if (forced.state !== 'started') {
      if (!WAKEABLE.has(forced.state) && !SETTLING_DOWN.has(forced.state)) {
        throw new HangarError('invalid_state', `machine ${id} of app ${app} is ${forced.state}`, { hint: 'wait for it to settle, or start it (POST …/start)' });
      }
      await this.#wake(forced);
    } else if (forced.booting) {
      await this.#listening(forced);
    }
    return this.#acquire(forced);
  }

  /** Counts load against a route for as long as a request or stream uses it. */
  #acquire(route: Route): Picked {
    route.load++;
    const done = this.#opts.activity.hold(route.id);
    let released = false;
    return {
      route,
      release: () => {
        if (released) return;
        released = true;
        done();
        if (--route.load === 0) route.idleSince = Date.now();
        this.#queues.get(route.app)?.shift()?.();
      },
    };
  }

  /** Waits for some load of the app to be released; false once the deadline passes. */
  #queue(app: string, deadline: number): Promise<boolean> {
    return new Promise((resolve) => {
      const queue = this.#queues.get(app) ?? [];
      this.#queues.set(app, queue);
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        const i = queue.indexOf(wake);
        if (i >= 0) queue.splice(i, 1);
        resolve(false);
      }, Math.max(0, deadline - Date.now()));
      queue.push(wake);
    });
  }

  /** Starts the machine once however many requests ask, and waits for its port. */
  #wake(route: Route): Promise<void> {
    const running = this.#waking.get(route.id);
    if (running) return running;
    const work = (async () => {
      this.#opts.onWake?.(route);
      if (SETTLING_DOWN.has(route.state)) {
        await this.#opts.machines.wait(route.app, route.id, { state: 'stopped', timeoutMs: BOOT_DEADLINE_MS }).catch(() => undefined);
      }
      try {
        await this.#opts.machines.start(route.app, route.id);
      } catch (err) {
        // Someone else started it in the meantime; anything else means no wake.
        if (this.#opts.machines.get(route.app, route.id).state !== 'started') throw err;
      }
      await this.#untilAccepting(route);
    })().finally(() => this.#waking.delete(route.id));
    this.#waking.set(route.id, work);
    return work;
  }

  /** Waits, with every other request that asks, for a booting machine's port. */
  #listening(route: Route): Promise<void> {
    const running = this.#waking.get(route.id);
    if (running) return running;
    const work = this.#untilAccepting(route).finally(() => this.#waking.delete(route.id));
    this.#waking.set(route.id, work);
    return work;
  }

  async #untilAccepting(route: Route): Promise<void> {
    try {
      while (!(await accepts(route.ip, route.port))) {
        if (route.state !== 'started') {
          throw new HangarError('invalid_state', `machine ${route.id} went ${route.state} before its port ${route.port} accepted a connection`, {
            hint: `check why it exited: hangar machines logs ${route.id} --app ${route.app}`,
          });
        }
        if (Date.now() > route.bootDeadline) {
          throw new HangarError('wait_timeout', `machine ${route.id} started but nothing accepted connections on port ${route.port} within ${BOOT_DEADLINE_MS / 1000}s`, {
            hint: `make the machine's server listen on 0.0.0.0:${route.port}, or fix services[].internal_port`,
          });
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      // Waited for once: from now on a refused connection is the server's failure, answered 502.
      route.booting = false;
    }
  }
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
