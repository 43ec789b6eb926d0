import { randomBytes } from 'node:crypto';
import { HangarError } from '../protocol/errors.ts';
import type { MachineRunner } from './machine-runner.ts';
import type { CallOptions, Caller, MachineService } from './machine-service.ts';
import type { CheckpointRecord, MachineRecord, Store } from './store.ts';
import type { ForkRequest } from '../protocol/checkpoints.ts';
import type { DiffOptions, DiffResult } from '../storage/filesystem-diff.ts';
import { assertLegal } from './transitions.ts';
import { KeyedQueue } from './keyed-queue.ts';
import type { VolumeService } from './volume-service.ts';
import type { MachineMount } from '../protocol/machine-config.ts';

// Captures of a machine's disk and volumes. Checkpoints: named, immutable copies it can be rolled
// back to. Forks: new machines, each with its own copy (of the volumes too: new volumes, attached
// to the fork). Every copy is a reflink of an image, so it costs the same whatever the disk holds
// and however many exist. Captures of one machine run one at a time.

export type CheckpointRequest = { name?: string; comment?: string };

export class CheckpointService {
  readonly #store: Store;
  readonly #machines: MachineService;
  readonly #runner: MachineRunner;
  readonly #volumes: VolumeService;
  readonly #queue = new KeyedQueue();

  constructor(deps: { store: Store; machines: MachineService; runner: MachineRunner; volumes: VolumeService }) {
    this.#store = deps.store;
    this.#machines = deps.machines;
    this.#runner = deps.runner;
    this.#volumes = deps.volumes;
  }

  async create(app: string, machineId: string, req: CheckpointRequest): Promise<CheckpointRecord> {
    const { id: machine } = this.#machineWithDisk(app, machineId);
    return this.#serialized(machine, async () => {
      const m = this.#machines.get(app, machine);
      assertLegal('checkpoint', m.state, m.id);
      const id = `ck${randomBytes(6).toString('hex')}`;
      const name = req.name ?? id;
      if (this.#store.findCheckpoint(m.id, name)) {
        throw new HangarError('checkpoint_name_taken', `machine ${m.id} already has a checkpoint named ${name}`, {
          hint: 'choose another name, or leave name out to get the id as its name',
          details: { name },
        });
      }
      const volumes = await this.#runner.captureDisk(m, id);
      const record: CheckpointRecord = {
        id, machineId: m.id, name, comment: req.comment ?? '', createdAt: new Date().toISOString(),
        sizeBytes: this.#runner.diskUsage(m)?.usedBytes ?? 0, parentId: this.#store.checkpointHead(m.id), volumes,
      };
      this.#store.insertCheckpoint(record);
      return record;
    });
  }

  list(app: string, machineId: string): CheckpointRecord[] {
    return this.#store.listCheckpoints(this.#machines.get(app, machineId).id);
  }

  get(app: string, machineId: string, idOrName: string): CheckpointRecord {
    const m = this.#machines.get(app, machineId);
    const c = this.#store.findCheckpoint(m.id, idOrName);
    if (!c) {
      throw new HangarError('checkpoint_not_found', `machine ${m.id} has no checkpoint ${idOrName}`, {
        hint: `list its checkpoints: GET /v1/apps/${app}/machines/${m.id}/checkpoints`,
        details: { checkpoint: idOrName, machine_id: m.id },
        next: [{ action: 'checkpoint_list', app, id: m.id }],
      });
    }
    return c;
  }

  async delete(app: string, machineId: string, idOrName: string): Promise<void> {
    const c = this.get(app, machineId, idOrName);
    const m = this.#machines.get(app, machineId);
    await this.#serialized(m.id, async () => {
      this.#store.transaction(() => {
        this.#store.deleteCheckpoint(c);
        if (this.#store.checkpointHead(m.id) === c.id) this.#store.setCheckpointHead(m.id, c.parentId);
      });
      await this.#runner.removeCheckpoint(m, c.id, c.volumes);
    });
  }

  /** Rolls the machine back, with the volumes the checkpoint captured that it still has; the checkpoint and the ones after it stay. */
  async restore(app: string, machineId: string, idOrName: string, opts: CallOptions = {}): Promise<MachineRecord> {
    const c = this.get(app, machineId, idOrName);
    const m = this.#machineWithDisk(app, machineId);
    await this.#serialized(m.id, () => this.#machines.restoreCheckpoint(m, c, opts));
    return this.#machines.get(app, m.id);
  }

  /**
   * What a checkpoint changed since its parent (`to` absent), or between two points: `from` a
   * checkpoint or null for the image as created, `to` a checkpoint or 'live' for the machine now.
   */
  async diff(app: string, machineId: string, range: { from?: string | null; to?: string }, opts: DiffOptions): Promise<DiffResult & { from: string | null; to: string }> {
    const m = this.#machineWithDisk(app, machineId);
    const from = range.from ? this.get(app, m.id, range.from).id : null;
    const to = range.to && range.to !== 'live' ? this.get(app, m.id, range.to).id : undefined;
    const result = await this.#serialized(m.id, () => this.#runner.diff(this.#machines.get(app, m.id), from, to, opts));
    return { from, to: to ?? 'live', ...result };
  }

  /**
   * New machines, each on a copy of the machine's disk as it is now (or as a checkpoint holds it).
   * Each mount of one of the source's volumes becomes a mount of a new volume copied from it.
   */
  async fork(app: string, machineId: string, req: ForkRequest, opts: CallOptions = {}): Promise<MachineRecord[]> {
    const src = this.#machineWithDisk(app, machineId);
    const checkpoint = req.checkpoint === undefined ? undefined : this.get(app, src.id, req.checkpoint);
    const count = req.count ?? 1;
    const base = req.config ?? src.config;
    // The copy holds the source's whole disk: it cannot be smaller.
    const config = { ...base, rootfs: { ...base.rootfs, size_gb: Math.max(base.rootfs?.size_gb ?? src.diskGb, src.diskGb) } };
    const snapshot = await this.#serialized(src.id, async () => {
      if (checkpoint) {
        const volumes = new Map(checkpoint.volumes.map((v) => [v, this.#runner.checkpointVolume(src, checkpoint.id, v)]));
        return { path: this.#runner.checkpointDisk(src, checkpoint.id), volumes, discard: async () => undefined };
      }
      assertLegal('checkpoint', this.#machines.get(app, src.id).state, src.id);
      return this.#runner.snapshotDisk(src);
    });
    try {
      const names = Array.from({ length: count }, (_, i) => (req.name ? (count === 1 ? req.name : `${req.name}-${i + 1}`) : undefined));
      return await Promise.all(
        names.map(async (name) => {
          const copies = await this.#copyVolumes(app, config.mounts, snapshot.volumes, opts.caller ?? {});
          try {
            return await this.#machines.create(
              app,
              { config: { ...config, ...(config.mounts ? { mounts: copies.mounts } : {}) }, ...(name ? { name } : {}), ...(req.skip_launch ? { skip_launch: true } : {}) },
              { ...opts, disk: { from: snapshot.path, uidBase: src.uidBase } },
            );
          } catch (err) {
            for (const v of copies.made) await this.#volumes.delete(app, v).catch(() => undefined);
            throw err;
          }
        }),
      );
    } finally {
      await snapshot.discard();
    }
  }

  /** Runs `fn` between the machine's captures, restores and deletes, never during one. */
  exclusive<T>(machineId: string, fn: () => Promise<T>): Promise<T> {
    return this.#serialized(machineId, fn);
  }

  /** The mounts with each volume of which `images` holds a copy replaced by a new volume made from it. */
  async #copyVolumes(app: string, mounts: MachineMount[] | undefined, images: Map<string, string>, caller: Caller): Promise<{ mounts: MachineMount[]; made: string[] }> {
    const made: string[] = [];
    try {
      const copied: MachineMount[] = [];
      for (const mount of mounts ?? []) {
        const image = images.get(mount.volume);
        if (!image) {
          copied.push(mount);
          continue;
        }
        const v = await this.#volumes.createFromImage(app, this.#store.volumes.get(mount.volume)?.name ?? mount.name ?? 'fork', image, caller);
        made.push(v.id);
        copied.push({ ...mount, volume: v.id });
      }
      return { mounts: copied, made };
    } catch (err) {
      for (const v of made) await this.#volumes.delete(app, v).catch(() => undefined);
      throw err;
    }
  }

  #machineWithDisk(app: string, machineId: string): MachineRecord {
    const m = this.#machines.get(app, machineId);
    if (m.diskGb === 0) {
      throw new HangarError('checkpoints_unsupported', `machine ${m.id} was made before machines had disks of their own; it cannot be checkpointed`, {
        hint: 'create a new machine from the same image and config; its disk supports checkpoints',
      });
    }
    return m;
  }

  #serialized<T>(machineId: string, fn: () => Promise<T>): Promise<T> {
    return this.#queue.run(machineId, fn);
  }
}
