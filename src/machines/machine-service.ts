import { allocateAddress } from '../network/allocation.ts';
import { allocateUidBase } from './id-ranges.ts';
import type { MachineRange } from '../network/addresses.ts';
import type { ImageService } from '../images/image-service.ts';
import type { ExitInfo } from '../runtime/driver.ts';
import { HangarError } from '../protocol/errors.ts';
import { DEFAULT_ROOTFS_SIZE_GB, withDefaultGuest, withRootfsSize, type MachineConfig } from '../protocol/machine-config.ts';
import type { CreateMachineRequest, UpdateMachineRequest } from '../protocol/schemas.ts';
import type { MachineState, PersistentState, WaitableState } from '../protocol/states.ts';
import type { EventSource } from '../protocol/event-sources.ts';
import { validateFiles } from '../storage/machine-files.ts';
import { decideAfterExit } from './exit-policy.ts';
import { assertFitsHost } from './host-limits.ts';
import { newInstanceId, newMachineId } from './ids.ts';
import { activeLease, assertLeaseHolder } from './leases.ts';
import { event, exitEvent } from './machine-events.ts';
import type { MachineRunner } from './machine-runner.ts';
import { commandFor } from './process-spec.ts';
import type { StateWaiters } from './state-waiters.ts';
import type { CheckpointRecord, EventRecord, MachineRecord, Store } from './store.ts';
import { assertClaimable, claimVolumes, releaseVolumes } from './volume-claims.ts';
import { assertLegal, transientStateOf, type Action } from './transitions.ts';
import type { Asker, LimitGuard } from './limits.ts';
import type { TokenBudget } from '../protocol/limits.ts';

/** Who made a call: the limits caveats of its token (none for the admin token). */
export type Caller = { budgets?: readonly TokenBudget[] };

// Machine lifecycle: every transition is checked against the one table, recorded as an intent
// in SQLite before it acts and closed after, and published to waiters.

/**
 * `caller`: set on calls a client made (REST, and through it the CLI, SDK and MCP); rate limits
 * apply to those, and its token's budgets (limits caveats), which what it makes or starts is charged to.
 */
export type CallOptions = { leaseNonce?: string; signal?: AbortSignal; caller?: Caller };
type Source = EventSource;

/**
 * Who asks for a stop or destroy when it is not a user's call (autostop, a lifetime rule), and
 * why; both go into the event. They act regardless of leases, as flyd's restarts do.
 */
export type Cause = { source: Exclude<EventSource, 'user'>; reason: Record<string, unknown> };

/** A stop of a started machine (or its main process ending), which ends the commands running in it. */
export type Halt = { action: Action | 'exit'; source: EventSource; reason?: Record<string, unknown>; at: number };

/** Actions that halt a started machine on their way. */
const HALTING: ReadonlySet<Action> = new Set(['stop', 'restart', 'update', 'destroy', 'restore']);

export class MachineService {
  readonly #store: Store;
  readonly #images: ImageService;
  readonly #runner: MachineRunner;
  readonly #waiters: StateWaiters;
  readonly #machineRange: MachineRange;
  readonly #limits: LimitGuard | undefined;
  readonly #restartTimers = new Map<string, NodeJS.Timeout>();
  /** Exits seen while a transition was under way; handled once it settles in `started`. */
  readonly #pendingExits = new Map<string, ExitInfo>();
  /** The last halt of each machine, so a command it cut short can say why. */
  readonly #halts = new Map<string, Halt>();

  constructor(deps: { store: Store; images: ImageService; runner: MachineRunner; waiters: StateWaiters; machineRange: MachineRange; limits?: LimitGuard }) {
    this.#store = deps.store;
    this.#limits = deps.limits;
    this.#machineRange = deps.machineRange;
    this.#images = deps.images;
    this.#runner = deps.runner;
    this.#waiters = deps.waiters;
  }

  /** A machine by id, whatever its app, unless destroyed. */
  byId(id: string): MachineRecord | undefined {
    const m = this.#store.getMachine(id);
    return m && m.state !== 'destroyed' ? m : undefined;
  }

  get(app: string, idOrName: string, opts: { includeDestroyed?: boolean } = {}): MachineRecord {
    const m = this.#store.getMachine(idOrName) ?? this.#store.findMachineByName(app, idOrName);
    const gone = !m || (m.state === 'destroyed' && !opts.includeDestroyed);
    if (!gone && m.app !== app) {
      // A robot juggling apps sends an id to the wrong one; say where it is.
      throw new HangarError('machine_not_found', `no machine ${idOrName} in app ${app}; it is in app ${m.app}`, {
        hint: `it is at /v1/apps/${m.app}/machines/${m.id}`,
        details: { machine_id: idOrName, app, machine_app: m.app },
        next: [{ action: 'machine_get', app: m.app, id: m.id }],
      });
    }
    if (gone || !m) {
      throw new HangarError('machine_not_found', `no machine ${idOrName} in app ${app}`, {
        hint: `list the app's machines: GET /v1/apps/${app}/machines`,
        details: { machine_id: idOrName, app },
        next: [{ action: 'machine_list', app }],
      });
    }
    return m;
  }

  list(app: string, filter: { includeDestroyed?: boolean; metadata?: Record<string, string> } = {}): MachineRecord[] {
    return this.#store
      .listMachines({ app, includeDestroyed: filter.includeDestroyed })
      .filter((m) => Object.entries(filter.metadata ?? {}).every(([k, v]) => m.config.metadata?.[k] === v));
  }

  /** The app's secrets, which files[].secret_name may name. */
  #secretNames(app: string): Set<string> {
    return new Set(this.#store.secrets.list(app).map((s) => s.name));
  }

  events(app: string, id: string): EventRecord[] {
    return this.#store.listEvents(this.get(app, id, { includeDestroyed: true }).id);
  }

  /**
   * `disk` makes the machine a fork: its disk is a clone of that image, and it shares the id range
   * of the machine the image came from (whose files it holds).
   */
  async create(app: string, req: CreateMachineRequest, opts: CallOptions & { disk?: { from: string; uidBase: number } } = {}): Promise<MachineRecord & { nonce?: string }> {
    req = { ...req, config: withRootfsSize(withDefaultGuest(req.config), DEFAULT_ROOTFS_SIZE_GB) };
    validateConfig(req.config, this.#secretNames(app));
    this.#assertNameFree(app, req.name);
    assertClaimable(this.#store, app, undefined, req.config.mounts);
    const who = asker(app, opts);
    this.#limits?.assert(who, { kind: 'create' });
    const image = await this.#images.ensure(req.config.image, { signal: opts.signal });
    commandFor(req.config, image.config);
    const id = newMachineId();
    const now = new Date().toISOString();
    const m: MachineRecord = {
      id, app, name: req.name ?? `machine-${id}`, state: 'creating', instanceId: newInstanceId(),
      config: req.config, imageRef: image.ref, layerDirs: image.layerDirs, privateIp: '',
      createdAt: now, updatedAt: now, restartCount: 0, lease: null, cordoned: false, uidBase: 0,
      diskGb: req.config.rootfs!.size_gb!,
    };
    if (req.lease_ttl) {
      m.lease = { nonce: newInstanceId().toLowerCase(), expiresAt: Math.floor(Date.now() / 1000) + req.lease_ttl, owner: 'api', description: '', version: m.instanceId };
    }
    const intent = this.#store.transaction(() => {
      // Again, now in the same synchronous step as the insert: the image await let others in.
      this.#assertNameFree(app, req.name);
      this.#limits?.assert({ ...who, api: false }, { kind: 'create' });
      m.privateIp = allocateAddress(this.#store, this.#machineRange, app);
      m.uidBase = opts.disk?.uidBase || allocateUidBase(this.#store);
      this.#store.insertMachine(m);
      this.#store.budgets.charge('machine', id, budgetIds(who));
      claimVolumes(this.#store, app, id, req.config.mounts);
      // A fork cut off by a crash is undone, not finished (reconcile.ts): its disk may be half-made.
      return this.#store.openIntent(id, opts.disk ? 'fork' : 'create', 'creating');
    });
    try {
      if (opts.disk) await this.#runner.cloneDisk(m, opts.disk.from);
      await this.#runner.layOut(m, image.config);
    } catch (err) {
      await this.#runner.remove(m).catch(() => undefined);
      this.#store.transaction(() => releaseVolumes(this.#store, m.id));
      this.#setState(m, 'destroyed', event('launch', 'failed', 'user', { error: String((err as Error).message) }));
      this.#store.closeIntent(intent, `failed: ${(err as Error).message}`);
      throw err;
    }
    this.#setState(m, 'created', event('launch', 'created', 'user'));
    this.#store.closeIntent(intent, 'created');
    if (!req.skip_launch) await this.#startTransition(m, 'user', m.lease?.nonce, who);
    return { ...this.#store.getMachine(id)!, ...(m.lease ? { nonce: m.lease.nonce } : {}) };
  }

  async start(app: string, id: string, opts: CallOptions = {}): Promise<{ previousState: MachineState }> {
    const m = this.get(app, id);
    const previousState = m.state;
    const who = asker(app, opts);
    // Only a start that would act counts against the rate: a robot asking again is told invalid_state.
    assertLegal('start', m.state, m.id);
    m.restartCount = 0;
    await this.#startTransition(m, 'user', opts.leaseNonce, who, { startRate: true });
    return { previousState };
  }

  async stop(app: string, id: string, opts: CallOptions & { signalName?: string; timeoutMs?: number; cause?: Cause } = {}): Promise<void> {
    const m = this.get(app, id);
    await this.#transition(m, 'stop', opts.cause?.source ?? 'user', opts.leaseNonce, async () => {
      const exit = await this.#runner.halt(m, { signal: opts.signalName, timeoutMs: opts.timeoutMs });
      this.#store.addEvent(m.id, exitEvent(exit, { requestedStop: true, restarting: false }));
      return 'stopped';
    }, { reason: opts.cause?.reason });
  }

  async restart(app: string, id: string, opts: CallOptions & { signalName?: string; timeoutMs?: number } = {}): Promise<void> {
    const m = this.get(app, id);
    const who = asker(app, opts);
    await this.#transition(m, 'restart', 'user', opts.leaseNonce, async (from) => {
      // From the state before the claim: the machine's own says `restarting` by now.
      if (from !== 'stopped') {
        const exit = await this.#runner.halt(m, { signal: opts.signalName, timeoutMs: opts.timeoutMs });
        this.#store.addEvent(m.id, exitEvent(exit, { requestedStop: true, restarting: true }));
      }
      m.restartCount = 0;
      await this.#runFresh(m, true);
      return 'started';
    }, {
      // A restart of a running machine keeps its run; one from stopped starts a new one.
      admit: (from) => {
        if (from === 'stopped') this.#admitRun(m, who);
      },
    });
  }

  async update(app: string, id: string, req: UpdateMachineRequest, opts: CallOptions = {}): Promise<MachineRecord> {
    const m = this.get(app, id);
    req = { ...req, config: withDefaultGuest(req.config) };
    if (m.diskGb > 0) req.config = withRootfsSize(req.config, m.diskGb);
    validateConfig(req.config, this.#secretNames(app));
    assertDiskFits(m, req.config);
    assertClaimable(this.#store, app, m.id, req.config.mounts);
    assertLegal('update', m.state, m.id);
    assertLeaseHolder(m, opts.leaseNonce);
    const image = await this.#images.ensure(req.config.image, { signal: opts.signal });
    commandFor(req.config, image.config);
    // A running machine runs on at its new size.
    if (m.state === 'started') this.#limits?.assert(asker(app, opts), { kind: 'run', guest: req.config.guest, machineId: m.id });
    await this.#transition(m, 'update', 'user', opts.leaseNonce, async (from) => {
      if (from === 'started') {
        const exit = await this.#runner.halt(m, {});
        this.#store.addEvent(m.id, exitEvent(exit, { requestedStop: true, restarting: true }));
      }
      if (image.layerDirs.join('\n') !== m.layerDirs.join('\n')) await this.#runner.unmount(m);
      await this.#runner.unmountVolumes(this.#store.transaction(() => claimVolumes(this.#store, app, m.id, req.config.mounts)));
      Object.assign(m, { config: req.config, instanceId: newInstanceId(), imageRef: image.ref, layerDirs: image.layerDirs });
      if (m.diskGb > 0) m.diskGb = req.config.rootfs!.size_gb!;
      if (req.name) m.name = req.name;
      await this.#runner.layOut(m, image.config);
      this.#store.addEvent(m.id, event('update', from, 'user'));
      if (from !== 'started') return from;
      await this.#runner.run(m, (exit) => this.#onExit(m.id, exit));
      return 'started';
    });
    return this.#store.getMachine(m.id)!;
  }

  async destroy(app: string, id: string, opts: CallOptions & { force?: boolean; cause?: Cause } = {}): Promise<void> {
    const m = this.get(app, id);
    if (m.state === 'started' && !opts.force) {
      throw new HangarError('invalid_state', `machine ${m.id} is started; destroying it needs force`, {
        hint: 'stop it first (POST …/stop), or pass ?force=true to kill it',
        details: { state: m.state },
        next: [{ action: 'machine_stop', app, id: m.id }, { action: 'machine_destroy', app, id: m.id, force: true }],
      });
    }
    await this.#transition(m, 'destroy', opts.cause?.source ?? 'user', opts.leaseNonce, async (from) => {
      if (from === 'started') await this.#runner.halt(m, { signal: 'SIGKILL', timeoutMs: 0 });
      await this.#runner.remove(m);
      // The machine's volumes stay, free for another machine to mount.
      this.#store.transaction(() => {
        releaseVolumes(this.#store, m.id);
        this.#store.deleteCheckpointsOf(m.id);
      });
      return 'destroyed';
    }, { reason: opts.cause?.reason });
    this.#halts.delete(m.id);
  }

  /** Rolls the machine's disk and volumes back to a checkpoint; a started machine is restarted on it. */
  async restoreCheckpoint(m: MachineRecord, checkpoint: CheckpointRecord, opts: CallOptions = {}): Promise<void> {
    await this.#transition(m, 'restore', 'user', opts.leaseNonce, async (from) => {
      if (from === 'started') {
        const exit = await this.#runner.halt(m, {});
        this.#store.addEvent(m.id, exitEvent(exit, { requestedStop: true, restarting: true }));
      }
      await this.#runner.restoreDisk(m, checkpoint.id, checkpoint.volumes, (id) => this.#store.volumes.get(id)?.sizeGb ?? 0);
      this.#store.setCheckpointHead(m.id, checkpoint.id);
      if (from !== 'started') return from;
      await this.#runner.run(m, (exit) => this.#onExit(m.id, exit));
      return 'started';
    });
  }

  async signal(app: string, id: string, signalName: string, opts: CallOptions = {}): Promise<void> {
    const m = this.get(app, id);
    assertLegal('signal', m.state, m.id);
    assertLeaseHolder(m, opts.leaseNonce);
    await this.#runner.signal(m, signalName);
  }

  /** Resolves once the machine is in `state` (and version, when given); wait_timeout otherwise. */
  async wait(app: string, id: string, q: { state: WaitableState; timeoutMs: number; instanceId?: string }, signal?: AbortSignal): Promise<MachineState> {
    const m = this.get(app, id, { includeDestroyed: true });
    const matches = (state: MachineState, instanceId: string) =>
      state === q.state || (q.instanceId !== undefined && q.state === 'stopped' && instanceId !== q.instanceId);
    if (matches(m.state, m.instanceId)) return m.state;
    const ok = await this.#waiters.waitFor(m.id, (c) => matches(c.state, c.instanceId), q.timeoutMs, signal);
    if (ok) return q.state;
    const now = this.#store.getMachine(m.id)!;
    throw new HangarError('wait_timeout', `machine ${m.id} did not reach ${q.state} within ${q.timeoutMs / 1000}s; it is ${now.state}`, {
      hint: now.state === 'stopped' && q.state === 'started' ? 'start it: POST …/start' : 'wait again, or check …/events for why',
      details: { state: now.state, wanted: q.state },
      ...(now.state === 'stopped' && q.state === 'started' ? { next: [{ action: 'machine_start' as const, app, id: m.id }] } : {}),
    });
  }

  /** The machine's last halt if it came at or after `since` (ms), e.g. while a command ran. */
  haltSince(id: string, since: number): Halt | undefined {
    const halt = this.#halts.get(id);
    return halt && halt.at >= since ? halt : undefined;
  }

  /** Machine records as they are, for reconcile and for the exit path. */
  get store(): Store {
    return this.#store;
  }

  #assertNameFree(app: string, name: string | undefined): void {
    if (name && this.#store.findMachineByName(app, name)) {
      throw new HangarError('machine_name_taken', `app ${app} already has a machine named ${name}`, {
        hint: 'choose another name, or omit name to get a generated one',
      });
    }
  }

  // ---- transitions -------------------------------------------------------------------------

  async #startTransition(m: MachineRecord, source: Source, leaseNonce: string | undefined, who: Asker, opts: { startRate?: boolean } = {}): Promise<void> {
    await this.#transition(m, 'start', source, leaseNonce, async (from) => {
      await this.#runFresh(m, from === 'stopped' || from === 'failed');
      return 'started';
    }, { admit: () => this.#admitRun(m, who, opts) });
  }

  /**
   * A run the asker's limits allow, charged to its budgets. Called by the transition once the
   * state and lease allow it (a refused call consumes nothing), in the same synchronous step as
   * its claim of `starting` or `restarting`, which then counts.
   */
  #admitRun(m: MachineRecord, who: Asker, opts: { startRate?: boolean } = {}): void {
    // A quota first: it says what to change, where a rate only says when to ask again.
    this.#limits?.assert(who, { kind: 'run', guest: m.config.guest, machineId: m.id });
    if (opts.startRate) this.#limits?.assert(who, { kind: 'start_rate', machineId: m.id });
    // A client's start makes the run its token's; the daemon's own restarts keep whose it was.
    if (who.api) this.#store.budgets.charge('run', m.id, budgetIds(who));
  }

  async #runFresh(m: MachineRecord, resetAllowed: boolean): Promise<void> {
    if (resetAllowed && m.config.rootfs?.persist === 'never') await this.#runner.resetRootfs(m);
    await this.#runner.run(m, (exit) => this.#onExit(m.id, exit));
  }

  async #transition(
    m: MachineRecord,
    action: Action,
    source: Source,
    leaseNonce: string | undefined,
    work: (from: PersistentState) => Promise<PersistentState | 'destroyed'>,
    { reason, admit }: { reason?: Record<string, unknown>; admit?: (from: PersistentState) => void } = {},
  ): Promise<void> {
    // Check, admit and claim in one synchronous step: a concurrent call now sees the transient
    // state, and `admit` (limits and budget charges) runs only for a call the state and lease allow.
    assertLegal(action, m.state, m.id);
    if (source === 'user') assertLeaseHolder(m, leaseNonce);
    const from = m.state as PersistentState;
    admit?.(from);
    this.#cancelAutoRestart(m.id);
    this.#pendingExits.delete(m.id);
    const intent = this.#store.transaction(() => {
      const seq = this.#store.openIntent(m.id, action, from);
      this.#setState(m, transientStateOf(action) ?? from);
      return seq;
    });
    if (from === 'started' && HALTING.has(action)) this.#halts.set(m.id, { action, source, ...(reason ? { reason } : {}), at: Date.now() });
    let end: PersistentState | 'destroyed';
    try {
      end = await work(from);
    } catch (err) {
      const settled = await this.#settleAfterFailure(m, action, from);
      this.#setState(m, settled, event(action, 'failed', source, { ...reason, error: (err as Error).message }));
      this.#store.closeIntent(intent, `failed: ${(err as Error).message}`);
      throw err;
    }
    this.#setState(m, end, event(action, end, source, reason));
    this.#store.closeIntent(intent, end);
    const pending = this.#pendingExits.get(m.id);
    this.#pendingExits.delete(m.id);
    if (pending && end === 'started') this.#onExit(m.id, pending);
  }

  async #settleAfterFailure(m: MachineRecord, action: Action, from: PersistentState): Promise<PersistentState> {
    if (action === 'start') return 'failed';
    const running = await this.#runner.isRunning(m).catch(() => false);
    if (running) return 'started';
    return from === 'started' ? 'stopped' : from;
  }

  /** `atMs`: when it happened, if before now (usage counts from then). */
  #setState(m: MachineRecord, state: MachineState, ev?: EventRecord, atMs?: number): void {
    m.state = state;
    m.updatedAt = new Date().toISOString();
    this.#store.transaction(() => {
      this.#store.updateMachine(m, atMs);
      if (ev) this.#store.addEvent(m.id, ev);
    });
    this.#waiters.publish({ id: m.id, state, instanceId: m.instanceId });
  }

  // ---- exits the machine made on its own -----------------------------------------------------

  /** Follows a machine that was running before this daemon started. */
  adopt(m: MachineRecord): void {
    this.#runner.watch(m.id, (exit) => this.#onExit(m.id, exit));
  }

  #onExit(id: string, exit: ExitInfo): void {
    const m = this.#store.getMachine(id);
    if (!m) return;
    if (m.state !== 'started') {
      this.#pendingExits.set(id, exit);
      return;
    }
    void this.handleExit(m, exit).catch(() => undefined);
  }

  /** Records an exit nobody asked for and applies the restart policy. */
  async handleExit(m: MachineRecord, exit: ExitInfo): Promise<void> {
    const decision = decideAfterExit(m.config, exit.exitCode, m.restartCount);
    const intent = this.#store.openIntent(m.id, 'exit', m.state);
    this.#halts.set(m.id, { action: 'exit', source: 'flyd', reason: { exit_code: exit.exitCode }, at: Date.now() });
    // Dated at the exit: one seen only after a daemon restart stopped using the host back then.
    this.#setState(m, 'stopping', exitEvent(exit, { requestedStop: false, restarting: decision.restart }), exit.exitedAt.getTime());
    await this.#runner.cleanupExited(m.id).catch(() => undefined);
    this.#setState(m, 'stopped');
    this.#store.closeIntent(intent, 'stopped');
    if (decision.restart) {
      this.#restartTimers.set(m.id, setTimeout(() => void this.#autoRestart(m.id), decision.delayMs));
    } else if (m.config.auto_destroy) {
      await this.destroy(m.app, m.id, { leaseNonce: activeLease(m)?.nonce }).catch(() => undefined);
    }
  }

  async #autoRestart(id: string): Promise<void> {
    this.#restartTimers.delete(id);
    const m = this.#store.getMachine(id);
    if (!m || m.state !== 'stopped') return;
    m.restartCount += 1;
    await this.#startTransition(m, 'flyd', undefined, { app: m.app, api: false }).catch(() => undefined);
  }

  #cancelAutoRestart(id: string): void {
    clearTimeout(this.#restartTimers.get(id));
    this.#restartTimers.delete(id);
  }

  /** Stops timers so the daemon can exit; machines keep running. */
  close(): void {
    for (const timer of this.#restartTimers.values()) clearTimeout(timer);
    this.#restartTimers.clear();
  }
}

function asker(app: string, opts: CallOptions): Asker {
  return { app, api: opts.caller !== undefined, ...(opts.caller?.budgets?.length ? { budgets: opts.caller.budgets } : {}) };
}

function budgetIds(who: Asker): string[] {
  return (who.budgets ?? []).map((b) => b.id);
}

function validateConfig(config: MachineConfig, secretNames: Set<string>): void {
  assertFitsHost(config);
  validateFiles(config.files, secretNames);
}

/** Disks grow, never shrink: a smaller size would cut off what the machine wrote. */
function assertDiskFits(m: MachineRecord, config: MachineConfig): void {
  const wanted = config.rootfs?.size_gb;
  if (m.diskGb === 0 || wanted === undefined || wanted >= m.diskGb) return;
  throw new HangarError('rootfs_cannot_shrink', `machine ${m.id}'s disk is ${m.diskGb} GB; it cannot shrink to ${wanted} GB`, {
    hint: `leave rootfs.size_gb out or give ${m.diskGb} or more; to start smaller, create a new machine`,
    details: { size_gb: m.diskGb, requested: wanted },
  });
}
