import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { constants } from 'node:os';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Driver, ExecProcess, ExecRequest, ExecResult, ExecStreamRequest, ExitInfo, MachineSpec } from '../runtime/driver.ts';
import { processStats, type ProcessStat } from '../runtime/proc-stat.ts';
import { STOP_SIGNAL_ANNOTATION } from '../runtime/oci-spec.ts';
import type { ImageRunConfig } from '../images/image-service.ts';
import { durationToMs } from '../protocol/duration.ts';
import { HangarError } from '../protocol/errors.ts';
import { isDeviceMounted, mountLowerView, mountOverlay, mountReadOnlyView, resetUpper, unmount, unmountOverlay } from '../storage/overlay-rootfs.ts';
import { diffViews, type DiffOptions, type DiffResult, type DiffView } from '../storage/filesystem-diff.ts';
import { writeMachineFiles } from '../storage/machine-files.ts';
import { secretExtras, type MachineSecretsOf } from '../secrets/machine-trust.ts';
import { hasStartExtras } from '../runtime/start-extras.ts';
import { IdShift } from '../storage/id-shift.ts';
import type { DiskUsage, MachineDisks } from '../storage/machine-disk.ts';
import { captureImages } from '../storage/disk-image.ts';
import { thaw } from '../storage/loop-device.ts';
import type { VolumeDisks } from '../storage/volume-disk.ts';
import { removeHostTree } from '../storage/tree-remove.ts';
import { sweepStaleWrites } from '../storage/write-journal.ts';
import { assertLegal } from './transitions.ts';
import type { MachineNetwork } from '../network/machine-network.ts';
import { resolvConf } from '../network/resolv-conf.ts';
import type { MachinePaths } from './machine-paths.ts';
import { commandFor, envFor } from './process-spec.ts';
import { idRangeOf } from './id-ranges.ts';
import type { MachineRecord } from './store.ts';
import type { AppSettings } from '../protocol/app-settings.ts';

// The mechanics of running one machine: lay out its root filesystem and bundle, run it, halt it.
// It keeps no state; machine-service.ts decides when each step happens.

export type UserResolver = (rootfs: string, user: string) => Promise<{ uid: number; gid: number; additionalGids?: number[] }>;
/** The app's settings as they are now; read at every lay-out and start. */
export type AppSettingsLookup = (app: string) => AppSettings;
/**
 * Told of each run's end (the usage meter reads its cgroup and veth): just before a halt signals
 * it, while its cgroup is still there; after it exited on its own, before the cleanup removes
 * what of its cgroups outlived crun (see CgroupStats.runCpuSeconds).
 */
export type RunEndHook = (id: string) => Promise<void>;

const DEFAULT_STOP_TIMEOUT_MS = 5_000;
const KILL_GRACE_MS = 10_000;

export class MachineRunner {
  readonly #driver: Driver;
  readonly #paths: MachinePaths;
  readonly #resolveUser: UserResolver;
  readonly #network: MachineNetwork;
  readonly #disks: MachineDisks;
  readonly #volumes: VolumeDisks;
  readonly #appSettings: AppSettingsLookup;
  readonly #onRunEnd: RunEndHook;
  readonly #secretsOf: MachineSecretsOf;
  readonly #exitWaiters = new Map<string, (exit: ExitInfo) => void>();
  /** One exit watch per machine, for its current run only. */
  readonly #unwatch = new Map<string, () => void>();
  /** Per machine, whether its current run trusts the egress CA (started while its app had secrets). */
  readonly #trustsEgressCa = new Map<string, boolean>();
  /** Mounts under way, so two callers (a start and a files request) never mount one rootfs twice. */
  readonly #mounting = new Map<string, Promise<void>>();

  constructor(
    driver: Driver, paths: MachinePaths, resolveUser: UserResolver, network: MachineNetwork,
    storage: { disks: MachineDisks; volumes: VolumeDisks }, appSettings: AppSettingsLookup, onRunEnd: RunEndHook = async () => undefined,
    secretsOf: MachineSecretsOf = () => ({ placeholders: {}, egressCaPem: '' }),
  ) {
    this.#secretsOf = secretsOf;
    this.#onRunEnd = onRunEnd;
    this.#driver = driver;
    this.#disks = storage.disks;
    this.#volumes = storage.volumes;
    this.#appSettings = appSettings;
    this.#network = network;
    this.#paths = paths;
    this.#resolveUser = resolveUser;
  }

  /**
   * Slow path (create, update): mount the rootfs and write config.files, and meanwhile make the
   * network (neither needs the other, and each spends its time waiting on helper processes); then
   * write the bundle.
   */
  async layOut(m: MachineRecord, image: ImageRunConfig): Promise<void> {
    // Synchronous, as the other metadata calls on a create's path: each takes microseconds, where
    // a trip through the thread pool costs a turn of the loop (milliseconds on a busy host).
    mkdirSync(dirname(this.#paths.log(m.id)), { recursive: true });
    mkdirSync(this.#paths.bundle(m.id), { recursive: true });
    let spec: MachineSpec | undefined;
    const rootfs = async () => {
      const layout = this.#paths.overlay(m);
      if (m.diskGb > 0 && this.#disks.isSmallerThan(m.id, m.diskGb)) {
        await unmountOverlay(layout);
        await this.#disks.grow(m.id, m.diskGb);
      }
      // The view of the layers needs no disk: each waits on its own helpers meanwhile.
      await Promise.all([m.diskGb > 0 ? this.#disks.prepare(m.id, m.diskGb, layout.idmap?.range.base ?? 0) : undefined, mountLowerView(layout)]);
      if (!isDeviceMounted(layout.target)) await mountOverlay(layout);
      await this.#mountVolumes(m);
      await writeMachineFiles(layout.target, m.config.files, this.ids(m).root, this.#secretsOf(m.app).placeholders);
      // Its user comes from the image's /etc/passwd as the machine sees it; read while the network is made.
      spec = await this.#spec(m, image);
    };
    const network = async (ip: string) => {
      await this.#network.attach(m.id, ip);
      writeFileSync(this.#resolvConf(m.id), resolvConf(m.app, this.#network.subnetOf(ip).gateway));
    };
    await allSettled([rootfs(), ...(m.privateIp ? [network(m.privateIp)] : [])]);
    await this.#driver.prepare(spec!);
  }

  /** config.rootfs.persist = never: a fresh writable layer with config.files, before a start. */
  async resetRootfs(m: MachineRecord): Promise<void> {
    const layout = this.#paths.overlay(m);
    await unmountOverlay(layout);
    await resetUpper(layout);
    await mountOverlay(layout);
    await writeMachineFiles(layout.target, m.config.files, this.ids(m).root, this.#secretsOf(m.app).placeholders);
  }

  /** Fast path: the rootfs is laid out; mount it if a reboot took it away, then run. */
  async run(m: MachineRecord, onExit: (exit: ExitInfo) => void): Promise<{ pid: number }> {
    await this.#ensureMounted(m);
    // Temp files of uploads an earlier daemon died in the middle of (one readdir when there are none).
    await sweepStaleWrites(this.#paths.rootfs(m.id));
    // Kept across stop/start; only a host reboot takes these away.
    await this.#mountVolumes(m);
    if (m.privateIp) await this.#network.attach(m.id, m.privateIp);
    const bundleDir = this.#paths.bundle(m.id);
    // The app's secrets as they are now: placeholders come and go while the machine is stopped.
    const secrets = this.#secretsOf(m.app);
    const extras = await secretExtras(secrets.placeholders, secrets.egressCaPem, this.#paths.rootfs(m.id), bundleDir);
    const where = { bundleDir, logPath: this.#paths.log(m.id), nestedNamespaces: this.#nestedNamespaces(m), extras };
    const started = await this.#driver.start(m.id, where);
    // Only a machine that runs with the bundle trusts what it says.
    this.#trustsEgressCa.set(m.id, extras.binds.length > 0);
    this.watch(m.id, onExit);
    return started;
  }

  /**
   * Whether the machine's current run trusts the egress CA: only then does its DNS steer names to
   * the egress proxy, so a machine that was running before its app's first secret keeps reaching
   * those hosts directly (with the placeholder it does not have) instead of failing TLS. A run an
   * earlier daemon started is told by its bundle.
   */
  trustsEgressCa(id: string): boolean {
    let trusts = this.#trustsEgressCa.get(id);
    if (trusts === undefined) {
      trusts = hasStartExtras(this.#paths.bundle(id));
      this.#trustsEgressCa.set(id, trusts);
    }
    return trusts;
  }

  /**
   * The host path of the machine's root filesystem for the files API, mounted if a reboot took
   * the mount away. Legal in every persistent state (TRANSITIONS.files); the machine may be running.
   */
  async rootfs(m: MachineRecord): Promise<string> {
    assertLegal('files', m.state, m.id);
    await this.#ensureMounted(m);
    await sweepStaleWrites(this.#paths.rootfs(m.id));
    return this.#paths.rootfs(m.id);
  }

  /** The machine's volumes, mounted on the host for crun to bind into it. */
  async #mountVolumes(m: MachineRecord): Promise<void> {
    for (const id of volumesOf(m)) await this.#volumes.ensureMounted(id);
  }

  /** Unmounts volumes the machine no longer has (destroyed, or updated without them). */
  async unmountVolumes(ids: string[]): Promise<void> {
    for (const id of ids) await this.#volumes.unmount(id);
  }

  /** Whether the app lets its machines make namespaces; only a machine with a user namespace of its own may. */
  #nestedNamespaces(m: MachineRecord): boolean {
    return m.uidBase !== 0 && this.#appSettings(m.app).nestedNamespaces;
  }

  /** How the machine's ids map to the host's, for what the daemon writes into it or reads of it. */
  ids(m: MachineRecord): IdShift {
    return new IdShift(m.uidBase);
  }

  async #ensureMounted(m: MachineRecord): Promise<void> {
    const pending = this.#mounting.get(m.id);
    if (pending) return pending;
    const layout = this.#paths.overlay(m);
    const mounting = (async () => {
      if (isDeviceMounted(layout.target)) return;
      if (m.diskGb > 0) await this.#disks.ensureMounted(m.id);
      await mountOverlay(layout);
    })().finally(() => this.#mounting.delete(m.id));
    this.#mounting.set(m.id, mounting);
    return mounting;
  }

  /** Follows a running machine's exit; an exit a `halt` is waiting for goes to it instead. */
  watch(id: string, onExit: (exit: ExitInfo) => void): void {
    this.#stopWatching(id);
    const unwatch = this.#driver.watchExit(id, { bundleDir: this.#paths.bundle(id) }, (exit) => {
      this.#unwatch.delete(id);
      const waiter = this.#exitWaiters.get(id);
      if (waiter) {
        this.#exitWaiters.delete(id);
        waiter(exit);
      } else {
        onExit(exit);
      }
    });
    this.#unwatch.set(id, unwatch);
  }

  #stopWatching(id: string): void {
    this.#unwatch.get(id)?.();
    this.#unwatch.delete(id);
  }

  /** Signal, wait up to the stop timeout, then SIGKILL; resolves with the exit once it happened. */
  async halt(m: MachineRecord, opts: { signal?: string; timeoutMs?: number }): Promise<ExitInfo> {
    const where = { bundleDir: this.#paths.bundle(m.id) };
    const state = await this.#driver.state(m.id, where);
    if (state.status !== 'running') {
      this.#stopWatching(m.id);
      await this.#runEnded(m.id);
      await this.#driver.cleanup(m.id, where);
      return state.status === 'exited' ? state.exit : { exitCode: 0, oomKilled: false, exitedAt: new Date() };
    }
    const exited = new Promise<ExitInfo>((resolve) => this.#exitWaiters.set(m.id, resolve));
    const signal = opts.signal ?? m.config.stop_config?.signal ?? (await imageStopSignal(where.bundleDir)) ?? 'SIGTERM';
    const configured = m.config.stop_config?.timeout === undefined ? undefined : durationToMs(m.config.stop_config.timeout);
    const timeoutMs = opts.timeoutMs ?? configured ?? DEFAULT_STOP_TIMEOUT_MS;
    // Now, not after the exit: crun removes the machine's cgroup, and its CPU figures, as it ends.
    await this.#runEnded(m.id);
    await this.#driver.kill(m.id, signal).catch(() => undefined);
    let exit = await raceTimeout(exited, timeoutMs);
    if (!exit) {
      await this.#driver.kill(m.id, 'SIGKILL').catch(() => undefined);
      exit = await raceTimeout(exited, KILL_GRACE_MS);
    }
    this.#exitWaiters.delete(m.id);
    if (!exit) {
      throw new HangarError('runtime_error', `machine ${m.id} did not exit after SIGKILL`, {
        hint: 'the host may be overloaded; retry the stop, or destroy with force=true',
      });
    }
    await this.#driver.cleanup(m.id, where);
    return exit;
  }

  /** Usage is a record, not a step of the stop: a failure to read it never holds a machine up. */
  async #runEnded(id: string): Promise<void> {
    await this.#onRunEnd(id).catch((err: Error) => process.stderr.write(`hangar: usage of machine ${id}'s run not recorded: ${err.message}\n`));
  }

  async signal(m: MachineRecord, signal: string): Promise<void> {
    await this.#driver.kill(m.id, signal);
  }

  async isRunning(m: MachineRecord): Promise<boolean> {
    return (await this.#driver.state(m.id, { bundleDir: this.#paths.bundle(m.id) })).status === 'running';
  }

  exec(m: MachineRecord, request: ExecRequest): Promise<ExecResult> {
    return this.#driver.exec(m.id, request);
  }

  execStream(m: MachineRecord, request: ExecStreamRequest): Promise<ExecProcess> {
    return this.#driver.execStream(m.id, request);
  }

  async processes(m: MachineRecord): Promise<ProcessStat[]> {
    return processStats(await this.#driver.processes(m.id), this.#paths.rootfs(m.id));
  }

  async cleanupExited(id: string): Promise<void> {
    this.#stopWatching(id);
    await this.#runEnded(id);
    await this.#driver.cleanup(id, { bundleDir: this.#paths.bundle(id) });
  }

  async remove(m: MachineRecord): Promise<void> {
    this.#stopWatching(m.id);
    this.#trustsEgressCa.delete(m.id);
    await this.#driver.cleanup(m.id, { bundleDir: this.#paths.bundle(m.id) });
    await unmountOverlay(this.#paths.overlay(m));
    if (m.diskGb > 0) await this.#disks.remove(m.id);
    await this.unmountVolumes(volumesOf(m));
    await this.#network.detach(m.id);
    // Not rm -r: the machine may have made a tree deeper than PATH_MAX or than our descriptors.
    await removeHostTree(this.#paths.dir(m.id));
  }

  async unmount(m: MachineRecord): Promise<void> {
    await unmountOverlay(this.#paths.overlay(m));
  }

  /**
   * Captures the machine's disk and volumes, running or not, as checkpoint `checkpointId`, all at
   * one instant; answers the volumes captured.
   */
  async captureDisk(m: MachineRecord, checkpointId: string): Promise<string[]> {
    await this.#ensureMounted(m);
    const volumes = volumesOf(m);
    await captureImages([
      this.#disks.capture(m.id, this.#disks.checkpointImage(m.id, checkpointId)),
      ...volumes.map((v) => this.#volumes.capture(v, this.checkpointVolume(m, checkpointId, v))),
    ]);
    return volumes;
  }

  /**
   * Puts checkpoint `checkpointId` in place of the machine's disk, and of those of `volumes` (ids
   * the checkpoint captured) the machine still has; the machine must not be running.
   */
  async restoreDisk(m: MachineRecord, checkpointId: string, volumes: string[], volumeSizeGb: (id: string) => number): Promise<void> {
    await unmountOverlay(this.#paths.overlay(m));
    await this.#disks.unmount(m.id);
    await this.#disks.cloneFrom(m.id, this.#disks.checkpointImage(m.id, checkpointId));
    // A checkpoint taken before the disk grew is smaller than the machine's size now.
    if (this.#disks.isSmallerThan(m.id, m.diskGb)) await this.#disks.grow(m.id, m.diskGb);
    for (const v of volumes.filter((id) => volumesOf(m).includes(id))) {
      await this.#volumes.unmount(v);
      await this.#volumes.createFrom(v, this.checkpointVolume(m, checkpointId, v), volumeSizeGb(v));
    }
    await this.#ensureMounted(m);
    await this.#mountVolumes(m);
  }

  /**
   * A consistent copy of the machine's disk and volumes, running or not, for forks to clone:
   * `volumes` maps each volume id to its copy. Discard them after.
   */
  async snapshotDisk(m: MachineRecord): Promise<{ path: string; volumes: Map<string, string>; discard(): Promise<void> }> {
    await this.#ensureMounted(m);
    const path = this.#disks.forkImage(m.id);
    const volumes = new Map(volumesOf(m).map((v) => [v, path.replace(/\.ext4$/, `.${v}`)]));
    const all = [path, ...volumes.values()];
    try {
      await captureImages([this.#disks.capture(m.id, path), ...[...volumes].map(([v, dest]) => this.#volumes.capture(v, dest))]);
    } catch (err) {
      await Promise.all(all.map((p) => rm(p, { force: true })));
      throw err;
    }
    return { path, volumes, discard: async () => void (await Promise.all(all.map((p) => rm(p, { force: true })))) };
  }

  /**
   * The machine's writable layer as checkpoint `checkpointId` holds it, or (absent) as it is now,
   * captured frozen: mounted read-only until `release`. A capture of now is unlinked at once, so
   * nothing of it outlives the mount.
   */
  async mountCapture(m: MachineRecord, checkpointId: string | undefined): Promise<{ upperDir: string; release(): Promise<void> }> {
    const snapshot = checkpointId === undefined ? await this.snapshotDisk(m) : undefined;
    const target = join(this.#paths.dir(m.id), 'views', randomBytes(4).toString('hex'));
    const release = async () => {
      await unmount(target);
      await rm(target, { recursive: true, force: true });
    };
    try {
      await this.#disks.mountCapture(snapshot?.path ?? this.#disks.checkpointImage(m.id, checkpointId!), target);
    } catch (err) {
      await release();
      throw err;
    } finally {
      await snapshot?.discard();
    }
    return { upperDir: join(target, 'upper'), release };
  }

  checkpointDisk(m: MachineRecord, checkpointId: string): string {
    return this.#disks.checkpointImage(m.id, checkpointId);
  }

  /** Where checkpoint `checkpointId` of the machine keeps its copy of volume `volumeId`. */
  checkpointVolume(m: MachineRecord, checkpointId: string, volumeId: string): string {
    return join(this.#disks.checkpointDir(m.id), `${checkpointId}.${volumeId}`);
  }

  /** Gives a machine being created a clone of `image` as its disk (a fork). */
  async cloneDisk(m: MachineRecord, image: string): Promise<void> {
    await this.#disks.cloneFrom(m.id, image);
  }

  /**
   * What changed from checkpoint `from` (null: the image as created) to checkpoint `to`, or to the
   * live filesystem when `to` is absent.
   */
  async diff(m: MachineRecord, from: string | null, to: string | undefined, opts: DiffOptions): Promise<DiffResult> {
    await this.#ensureMounted(m);
    const layout = this.#paths.overlay(m);
    const views: string[] = [];
    const viewOf = async (checkpointId: string | null): Promise<DiffView> => {
      const base = join(this.#paths.dir(m.id), 'views', randomBytes(4).toString('hex'));
      views.push(base);
      // The image alone is the view of an empty writable layer.
      if (checkpointId === null) await mkdir(join(base, 'disk', 'upper'), { recursive: true });
      else await this.#disks.mountCheckpoint(m.id, checkpointId, join(base, 'disk'));
      await mountReadOnlyView(layout, join(base, 'disk', 'upper'), join(base, 'root'));
      return { root: join(base, 'root'), upper: join(base, 'disk', 'upper') };
    };
    try {
      const before = await viewOf(from);
      const after = to === undefined ? { root: layout.target, upper: layout.upperDir } : await viewOf(to);
      return await diffViews(before, after, opts);
    } finally {
      for (const base of views) {
        await unmount(join(base, 'root'));
        await unmount(join(base, 'disk'));
        await rm(base, { recursive: true, force: true });
      }
    }
  }

  /**
   * After a daemon died mid-capture or mid-diff: thaws frozen disks, removes half-made copies and
   * the read-only views a diff had mounted. `machines` are the live ones with their checkpoints.
   */
  async recoverStorage(machines: Array<{ m: MachineRecord; checkpoints: string[] }>): Promise<string[]> {
    const live = new Map(machines.filter(({ m }) => m.diskGb > 0).map(({ m, checkpoints }) => [m.id, new Set(checkpoints)]));
    const done = await this.#disks.recover(live);
    for (const { m } of machines) {
      for (const v of volumesOf(m)) {
        if ((await this.#volumes.isMounted(v)) && thaw(this.#volumes.mountPoint(v))) done.push(`thawed volume ${v}`);
      }
      const views = join(this.#paths.dir(m.id), 'views');
      const left = await readdir(views).catch(() => [] as string[]);
      for (const name of left) {
        // A diff's view (root over disk), or a commit's capture mounted at the view itself.
        await unmount(join(views, name, 'root'));
        await unmount(join(views, name, 'disk'));
        await unmount(join(views, name));
      }
      if (left.length > 0) {
        await rm(views, { recursive: true, force: true });
        done.push(`removed ${left.length} diff view(s) of ${m.id}`);
      }
    }
    return done;
  }

  async removeCheckpoint(m: MachineRecord, checkpointId: string, volumes: string[]): Promise<void> {
    await rm(this.#disks.checkpointImage(m.id, checkpointId), { force: true });
    for (const v of volumes) await rm(this.checkpointVolume(m, checkpointId, v), { force: true });
  }

  /** What the machine's disk holds and can hold; undefined for a machine without one, or before its first mount. */
  diskUsage(m: MachineRecord): DiskUsage | undefined {
    return m.diskGb > 0 ? this.#disks.usage(m.id) : undefined;
  }

  #resolvConf(id: string): string {
    return join(this.#paths.bundle(id), 'resolv.conf');
  }

  async #spec(m: MachineRecord, image: ImageRunConfig): Promise<MachineSpec> {
    const rootfs = this.#paths.rootfs(m.id);
    const user = await this.#resolveUser(rootfs, image.User ?? '');
    return {
      id: m.id,
      hostname: m.id,
      ...(image.StopSignal ? { stopSignal: image.StopSignal } : {}),
      // Machines made before they had addresses keep a namespace of their own (loopback only).
      ...(m.privateIp ? { netnsPath: this.#network.netnsPath(m.id), resolvConfPath: this.#resolvConf(m.id) } : {}),
      rootfs,
      bundleDir: this.#paths.bundle(m.id),
      logPath: this.#paths.log(m.id),
      process: {
        args: commandFor(m.config, image),
        env: envFor(m.config, image, { id: m.id, app: m.app, instanceId: m.instanceId, imageName: m.config.image, privateIp: m.privateIp }),
        cwd: image.WorkingDir || '/',
        ...user,
      },
      limits: { cpus: m.config.guest?.cpus, memoryMb: m.config.guest?.memory_mb },
      volumes: (m.config.mounts ?? []).map((v) => ({ source: this.#volumes.mountPoint(v.volume), destination: v.path })),
      ...(m.uidBase ? { idRange: idRangeOf(m.uidBase) } : {}),
      nestedNamespaces: this.#nestedNamespaces(m),
    };
  }
}

/**
 * Waits for every step, then throws the first failure: a caller that cleans up after a failure
 * must not race a step that is still making what it would remove.
 */
async function allSettled(steps: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(steps)).find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
}

function volumesOf(m: MachineRecord): string[] {
  return (m.config.mounts ?? []).map((v) => v.volume);
}

function raceTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The image's StopSignal as the bundle records it, as a name (images may give "15" or "USR1"). */
async function imageStopSignal(bundleDir: string): Promise<string | undefined> {
  const spec = await readFile(join(bundleDir, 'config.json'), 'utf8').then((t) => JSON.parse(t) as { annotations?: Record<string, string> }, () => undefined);
  const raw = spec?.annotations?.[STOP_SIGNAL_ANNOTATION]?.trim().toUpperCase();
  if (!raw) return undefined;
  if (/^\d+$/.test(raw)) return Object.entries(constants.signals).find(([, n]) => n === Number(raw))?.[0];
  return raw.startsWith('SIG') ? raw : `SIG${raw}`;
}
