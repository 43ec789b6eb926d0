import { HangarError } from '../protocol/errors.ts';
import type { MachineConfig } from '../protocol/machine-config.ts';
import { effectiveLimits, type Limits, type LimitsOverride } from '../protocol/limits.ts';
import { RateBuckets } from './rate-buckets.ts';
import type { Store } from './store.ts';

// The one check of every limit (protocol/limits.ts). Callers say who asks and what for; quotas
// are counted from the store in the same synchronous step as the caller's claim, so two
// concurrent asks cannot both take the last place. Rates are token buckets in memory.

/**
 * Who asks: the app always; the token once tokens carry an identity of their own (its limits
 * will apply on top of the app's). `api`: a call from a client, which rate limits apply to;
 * the daemon's own starts (crash restarts, the proxy waking a machine) pass only quotas.
 */
export type Asker = { app: string; token?: string; api: boolean };

export type Ask =
  | { kind: 'create' }
  /** `guest`: the size it will run at; `machineId`: the machine, when it exists (its own running size is not counted twice). */
  | { kind: 'run'; guest: MachineConfig['guest']; machineId?: string }
  /** A start asked for by a client: rate per machine. */
  | { kind: 'start_rate'; machineId: string }
  | { kind: 'volume'; addGb: number; newVolume: boolean };

export class LimitGuard {
  readonly #store: Store;
  readonly #defaults: Limits;
  readonly #appLimits: (app: string) => LimitsOverride | undefined;
  readonly #buckets = new RateBuckets();

  constructor(deps: { store: Store; defaults: Limits; appLimits: (app: string) => LimitsOverride | undefined }) {
    this.#store = deps.store;
    this.#defaults = deps.defaults;
    this.#appLimits = deps.appLimits;
  }

  limitsOf(app: string): Limits {
    return effectiveLimits(this.#defaults, this.#appLimits(app));
  }

  /** Throws rate_limited (429, with retry_after_seconds) or quota_exceeded (422) when `ask` is over a limit. */
  assert(who: Asker, ask: Ask): void {
    const l = this.limitsOf(who.app);
    switch (ask.kind) {
      case 'create': {
        const machines = this.#store.countLiveMachines(who.app);
        if (machines + 1 > l.machines) throw quota(who.app, 'machines', l.machines, machines, 'destroy machines it no longer needs');
        if (who.api) this.#rate(who.app, `create:${who.app}`, 'creates_per_minute', l.creates_per_minute / 60, l.creates_per_minute, 'machine creates');
        return;
      }
      case 'run': {
        const t = this.#store.runningTotals(who.app, ask.machineId);
        const stopHint = 'stop machines it does not need running';
        if (t.machines + 1 > l.running_machines) throw quota(who.app, 'running_machines', l.running_machines, t.machines, stopHint);
        const memoryMb = ask.guest?.memory_mb ?? 0;
        if (t.memoryMb + memoryMb > l.memory_mb) throw quota(who.app, 'memory_mb', l.memory_mb, t.memoryMb, stopHint, memoryMb);
        const cpus = ask.guest?.cpus ?? 0;
        if (t.cpus + cpus > l.cpus) throw quota(who.app, 'cpus', l.cpus, t.cpus, stopHint, cpus);
        return;
      }
      case 'start_rate':
        if (who.api) this.#rate(who.app, `start:${ask.machineId}`, 'starts_per_second', l.starts_per_second, l.start_burst, `starts of machine ${ask.machineId}`);
        return;
      case 'volume': {
        const t = this.#store.volumes.totals(who.app);
        if (ask.newVolume && t.volumes + 1 > l.volumes) throw quota(who.app, 'volumes', l.volumes, t.volumes, 'delete volumes it no longer needs');
        if (t.gb + ask.addGb > l.volume_gb) throw quota(who.app, 'volume_gb', l.volume_gb, t.gb, 'delete volumes it no longer needs', ask.addGb);
        return;
      }
    }
  }

  #rate(app: string, key: string, limit: keyof Limits, perSecond: number, burst: number, what: string): void {
    const taken = this.#buckets.take(key, perSecond, burst);
    if (taken.ok) return;
    const seconds = Number.isFinite(taken.retryAfterMs) ? Math.max(1, Math.ceil(taken.retryAfterMs / 1000)) : 60;
    throw new HangarError('rate_limited', `too many ${what}: app ${app} allows ${rateText(limit, perSecond, burst)}`, {
      hint: `wait ${seconds}s (Retry-After) and retry; a loop should back off, not spin. The app's limits: effective_limits in GET /v1/apps/${app}`,
      details: { app, limit, retry_after_seconds: seconds, per_second: perSecond, burst },
    });
  }
}

function rateText(limit: keyof Limits, perSecond: number, burst: number): string {
  return limit === 'creates_per_minute' ? `${burst} per minute` : `${perSecond} per second, ${burst} at once`;
}

function quota(app: string, limit: keyof Limits, max: number, used: number, what: string, adding = 1): HangarError {
  return new HangarError('quota_exceeded', `app ${app} is at its ${limit} limit: ${used} in use of ${max}${adding !== 1 ? `, asking for ${adding} more` : ''}`, {
    hint: `${what}, or raise the app's limit: PATCH /v1/apps/${app} {"limits": {"${limit}": ...}}`,
    details: { app, limit, max, used, asking: adding },
  });
}
