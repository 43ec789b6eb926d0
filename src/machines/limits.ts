import { HangarError } from '../protocol/errors.ts';
import type { MachineConfig } from '../protocol/machine-config.ts';
import { effectiveLimits, type Limits, type LimitsOverride, type TokenBudget } from '../protocol/limits.ts';
import { RateBuckets } from './rate-buckets.ts';
import type { Store } from './store.ts';

// The one check of every limit (protocol/limits.ts): the app's, then each limits caveat of the
// asking token's (its budget, shared by every token narrowed from the one carrying it). Quotas
// are counted from the store in the same synchronous step as the caller's claim, so two
// concurrent asks cannot both take the last place. Rates are token buckets in memory.

/**
 * Who asks: the app always; `budgets`, the limits caveats of the token asking (none for the
 * admin token). `api`: a call from a client, which rate limits apply to; the daemon's own starts
 * (crash restarts, the proxy waking a machine) pass only quotas.
 */
export type Asker = { app: string; api: boolean; budgets?: readonly TokenBudget[] };

export type Ask =
  | { kind: 'create' }
  /** `guest`: the size it will run at; `machineId`: the machine, when it exists (its own running size is not counted twice). */
  | { kind: 'run'; guest: MachineConfig['guest']; machineId?: string }
  /** A start asked for by a client: rate per machine. */
  | { kind: 'start_rate'; machineId: string }
  | { kind: 'volume'; addGb: number; newVolume: boolean };

type Totals = { machines: number; memoryMb: number; cpus: number };

/** What one set of limits is counted over: an app, or a token budget. */
type Scope = {
  /** The limits that apply; a field left out is no limit (a token's caveat may name a few). */
  limits: Partial<Limits>;
  /** Start rates need both halves; a token naming one takes the other from the app. */
  startRate: { perSecond: number; burst: number } | undefined;
  liveMachines(): number;
  running(exceptId?: string): Totals;
  volumes(): { volumes: number; gb: number };
  /** Prefix of its rate buckets' keys, its own: an app's buckets are not another's nor a budget's. */
  key: string;
  /** Says who is over which limit, and what to do. */
  quota(limit: keyof Limits, max: number, used: number, what: string, adding: number): HangarError;
  rate(limit: keyof Limits, seconds: number, what: string, allows: string, bucket: { per_second: number; burst: number }): HangarError;
};

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
    const app = this.limitsOf(who.app);
    const scopes = [this.#appScope(who.app, app), ...(who.budgets ?? []).map((b) => this.#tokenScope(who.app, app, b))];
    // Every quota first, then rates: a rate's bucket is taken only by an ask no quota refuses.
    for (const s of scopes) this.#quotas(s, ask);
    if (who.api) for (const s of scopes) this.#rates(s, ask);
  }

  #quotas(s: Scope, ask: Ask): void {
    const l = s.limits;
    switch (ask.kind) {
      case 'create': {
        if (l.machines === undefined) return;
        const machines = s.liveMachines();
        if (machines + 1 > l.machines) throw s.quota('machines', l.machines, machines, 'destroy machines it no longer needs', 1);
        return;
      }
      case 'run': {
        const t = s.running(ask.machineId);
        const stopHint = 'stop machines it does not need running';
        if (l.running_machines !== undefined && t.machines + 1 > l.running_machines) throw s.quota('running_machines', l.running_machines, t.machines, stopHint, 1);
        const memoryMb = ask.guest?.memory_mb ?? 0;
        if (l.memory_mb !== undefined && t.memoryMb + memoryMb > l.memory_mb) throw s.quota('memory_mb', l.memory_mb, t.memoryMb, stopHint, memoryMb);
        const cpus = ask.guest?.cpus ?? 0;
        if (l.cpus !== undefined && t.cpus + cpus > l.cpus) throw s.quota('cpus', l.cpus, t.cpus, stopHint, cpus);
        return;
      }
      case 'volume': {
        const t = s.volumes();
        if (l.volumes !== undefined && ask.newVolume && t.volumes + 1 > l.volumes) throw s.quota('volumes', l.volumes, t.volumes, 'delete volumes it no longer needs', 1);
        if (l.volume_gb !== undefined && t.gb + ask.addGb > l.volume_gb) throw s.quota('volume_gb', l.volume_gb, t.gb, 'delete volumes it no longer needs', ask.addGb);
        return;
      }
      case 'start_rate':
        return;
    }
  }

  #rates(s: Scope, ask: Ask): void {
    if (ask.kind === 'create' && s.limits.creates_per_minute !== undefined) {
      const perMinute = s.limits.creates_per_minute;
      this.#take(s, `${s.key}create`, 'creates_per_minute', perMinute / 60, perMinute, 'machine creates', `${perMinute} per minute`);
    }
    if (ask.kind === 'start_rate' && s.startRate) {
      const { perSecond, burst } = s.startRate;
      this.#take(s, `${s.key}start:${ask.machineId}`, 'starts_per_second', perSecond, burst, `starts of machine ${ask.machineId}`, `${perSecond} per second, ${burst} at once`);
    }
  }

  #take(s: Scope, key: string, limit: keyof Limits, perSecond: number, burst: number, what: string, allows: string): void {
    const taken = this.#buckets.take(key, perSecond, burst);
    if (taken.ok) return;
    const seconds = Number.isFinite(taken.retryAfterMs) ? Math.max(1, Math.ceil(taken.retryAfterMs / 1000)) : 60;
    throw s.rate(limit, seconds, what, allows, { per_second: perSecond, burst });
  }

  #appScope(app: string, l: Limits): Scope {
    const store = this.#store;
    return {
      limits: l,
      startRate: { perSecond: l.starts_per_second, burst: l.start_burst },
      liveMachines: () => store.countLiveMachines(app),
      running: (exceptId) => store.runningTotals({ app }, exceptId),
      volumes: () => store.volumes.totals(app),
      key: `app:${app}:`,
      quota: (limit, max, used, what, adding) =>
        new HangarError('quota_exceeded', `app ${app} is at its ${limit} limit: ${used} in use of ${max}${adding !== 1 ? `, asking for ${adding} more` : ''}`, {
          hint: `${what}, or raise the app's limit: PATCH /v1/apps/${app} {"limits": {"${limit}": ...}}`,
          details: { app, scope: 'app', limit, max, used, asking: adding },
        }),
      rate: (limit, seconds, what, allows, bucket) =>
        new HangarError('rate_limited', `too many ${what}: app ${app} allows ${allows}`, {
          hint: `wait ${seconds}s (Retry-After) and retry; a loop should back off, not spin. The app's limits: effective_limits in GET /v1/apps/${app}`,
          details: { app, scope: 'app', limit, retry_after_seconds: seconds, ...bucket },
        }),
    };
  }

  #tokenScope(app: string, appLimits: Limits, b: TokenBudget): Scope {
    const store = this.#store;
    const l = b.limits;
    const caveat = `the token's limits caveat (#${b.caveatIndex + 1}, budget ${b.id})`;
    const shared = 'it holds every token narrowed from the one that carries it, together, and no holder can raise it';
    const details = { app, scope: 'token', token_budget: b.id, caveat_index: b.caveatIndex };
    return {
      limits: l,
      startRate: l.starts_per_second !== undefined || l.start_burst !== undefined
        ? { perSecond: l.starts_per_second ?? appLimits.starts_per_second, burst: l.start_burst ?? appLimits.start_burst }
        : undefined,
      liveMachines: () => store.budgets.liveMachines(b.id),
      running: (exceptId) => store.runningTotals({ budget: b.id }, exceptId),
      volumes: () => store.budgets.volumeTotals(b.id),
      key: `${b.id}:`,
      quota: (limit, max, used, what, adding) =>
        new HangarError('quota_exceeded', `token limit: ${caveat} allows ${limit} ${max}, and ${used} are in use under it${adding !== 1 ? `, asking for ${adding} more` : ''}`, {
          hint: `${what} (of those this token and the tokens narrowed from it made or started), or use a token with more room: ${shared} (\`hangar tokens inspect TOKEN\`)`,
          details: { ...details, limit, max, used, asking: adding },
        }),
      rate: (limit, seconds, what, allows, bucket) =>
        new HangarError('rate_limited', `too many ${what}: ${caveat} allows ${allows}`, {
          hint: `wait ${seconds}s (Retry-After) and retry; a loop should back off, not spin. This is a token limit: ${shared}`,
          details: { ...details, limit, retry_after_seconds: seconds, ...bucket },
        }),
    };
  }
}
