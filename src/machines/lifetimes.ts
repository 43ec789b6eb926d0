import { durationToMs, formatDurationMs } from '../protocol/duration.ts';
import type { Lifetime, LifetimeRule } from '../protocol/lifetime.ts';
import type { MachineState } from '../protocol/states.ts';
import type { Activity } from './activity.ts';
import type { MachineService } from './machine-service.ts';
import type { StateWaiters } from './state-waiters.ts';
import type { MachineRecord, Store } from './store.ts';

// Applies each machine's config.lifetime: stop after idle_stop without activity, stop max_run
// after it started, destroy destroy_after_stopped after it stopped. Nothing is scheduled; a sweep
// compares clocks, and the clocks come from the records (the last start or stop event), so a
// daemon restart changes nothing but idleness, which counts from the restart at the earliest.

const SWEEP_MS = 250;
/** After a rule failed to act (the machine busy with another action, say), it tries again this much later. */
const RETRY_MS = 5_000;
/** States a machine lies in after running; destroy_after_stopped counts in these. */
const DOWN: ReadonlySet<MachineState> = new Set(['stopped', 'failed']);

type Tracked = { app: string; lifetime: Lifetime; state: MachineState; since: number };

export class Lifetimes {
  readonly #store: Store;
  readonly #machines: MachineService;
  readonly #activity: Activity;
  readonly #tracked = new Map<string, Tracked>();
  /** Machines a rule is acting on; the next sweeps leave them alone. */
  readonly #acting = new Set<string>();
  /** No machine was used before this daemon started, as far as it knows. */
  readonly #bootAt = Date.now();
  #timer: NodeJS.Timeout | undefined;

  constructor(deps: { store: Store; machines: MachineService; activity: Activity; waiters: StateWaiters }) {
    this.#store = deps.store;
    this.#machines = deps.machines;
    this.#activity = deps.activity;
    for (const m of this.#store.listMachines()) this.#track(m, this.#sinceFromRecords(m));
    deps.waiters.onChange((change) => {
      const m = this.#store.getMachine(change.id);
      if (!m) return this.#tracked.delete(change.id);
      const before = this.#tracked.get(m.id);
      this.#track(m, before?.state === m.state ? before.since : Date.now());
    });
  }

  start(): void {
    this.#timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
  }

  sweep(now = Date.now()): void {
    for (const [id, t] of this.#tracked) {
      if (this.#acting.has(id)) continue;
      const due = this.#due(id, t, now);
      if (due) this.#apply(id, t, due);
    }
  }

  #due(id: string, t: Tracked, now: number): { rule: LifetimeRule; ms: number } | undefined {
    const ms = (rule: LifetimeRule) => {
      const value = t.lifetime[rule];
      return value === undefined ? undefined : durationToMs(value);
    };
    if (t.state === 'started') {
      const maxRun = ms('max_run');
      if (maxRun !== undefined && now - t.since >= maxRun) return { rule: 'max_run', ms: maxRun };
      const idle = ms('idle_stop');
      if (idle !== undefined && this.#activity.idleMs(id, Math.max(t.since, this.#bootAt), now) >= idle) return { rule: 'idle_stop', ms: idle };
    } else if (DOWN.has(t.state)) {
      const after = ms('destroy_after_stopped');
      if (after !== undefined && now - t.since >= after) return { rule: 'destroy_after_stopped', ms: after };
    }
    return undefined;
  }

  #apply(id: string, t: Tracked, due: { rule: LifetimeRule; ms: number }): void {
    this.#acting.add(id);
    const cause = { source: 'lifetime' as const, reason: { rule: due.rule, limit: formatDurationMs(Math.round(due.ms)) } };
    const work = due.rule === 'destroy_after_stopped'
      ? this.#machines.destroy(t.app, id, { cause })
      : this.#machines.stop(t.app, id, { cause });
    work.then(
      () => this.#acting.delete(id),
      (err: Error) => {
        process.stderr.write(`hangar: lifetime ${due.rule} of ${id} failed: ${err.message}\n`);
        setTimeout(() => this.#acting.delete(id), RETRY_MS).unref();
      },
    );
  }

  #track(m: MachineRecord, since: number): void {
    const lifetime = m.config.lifetime;
    if (!lifetime || m.state === 'destroyed' || Object.keys(lifetime).length === 0) {
      this.#tracked.delete(m.id);
      return;
    }
    this.#tracked.set(m.id, { app: m.app, lifetime, state: m.state, since });
  }

  /** When the machine entered its state: its last event saying so, or its record's last change. */
  #sinceFromRecords(m: MachineRecord): number {
    if (!m.config.lifetime) return 0;
    const events = this.#store.listEvents(m.id);
    const status = m.state === 'failed' ? 'failed' : m.state;
    const last = events.filter((e) => e.status === status).reduce((latest, e) => Math.max(latest, e.timestamp), 0);
    return last || Date.parse(m.updatedAt);
  }
}
