import { randomBytes } from 'node:crypto';
import { HangarError } from '../protocol/errors.ts';
import type { MachineRunner } from './machine-runner.ts';
import type { CallOptions, MachineService } from './machine-service.ts';
import type { CheckpointRecord, MachineRecord, Store } from './store.ts';
import type { ForkRequest } from '../protocol/checkpoints.ts';
import type { DiffOptions, DiffResult } from '../storage/filesystem-diff.ts';
import { assertLegal } from './transitions.ts';

// Captures of a machine's disk. Checkpoints: named, immutable copies it can be rolled back to.
// Forks: new machines, each with its own copy. Every copy is a reflink of the disk image, so it
// costs the same whatever the disk holds and however many exist. Captures of one machine run one
// at a time.

export type CheckpointRequest = { name?: string; comment?: string };

export class CheckpointService {
  readonly #store: Store;
  readonly #machines: MachineService;
  readonly #runner: MachineRunner;
  readonly #queues = new Map<string, Promise<unknown>>();

  constructor(deps: { store: Store; machines: MachineService; runner: MachineRunner }) {
    this.#store = deps.store;
    this.#machines = deps.machines;
    this.#runner = deps.runner;
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
      await this.#runner.captureDisk(m, id);
      const record: CheckpointRecord = {
        id, machineId: m.id, name, comment: req.comment ?? '', createdAt: new Date().toISOString(),
        sizeBytes: this.#runner.diskUsage(m)?.usedBytes ?? 0, parentId: this.#store.checkpointHead(m.id),
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
      await this.#runner.removeCheckpoint(m, c.id);
    });
  }

  /** Rolls the machine back; the checkpoint and the ones after it stay. */
  async restore(app: string, machineId: string, idOrName: string, opts: CallOptions = {}): Promise<MachineRecord> {
    const c = this.get(app, machineId, idOrName);
    const m = this.#machineWithDisk(app, machineId);
    await this.#serialized(m.id, () => this.#machines.restoreCheckpoint(m, c.id, opts));
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

  /** New machines, each on a copy of the machine's disk as it is now (or as a checkpoint holds it). */
  async fork(app: string, machineId: string, req: ForkRequest, opts: CallOptions = {}): Promise<MachineRecord[]> {
    const src = this.#machineWithDisk(app, machineId);
    const checkpoint = req.checkpoint === undefined ? undefined : this.get(app, src.id, req.checkpoint);
    const count = req.count ?? 1;
    const base = req.config ?? src.config;
    // The copy holds the source's whole disk: it cannot be smaller.
    const config = { ...base, rootfs: { ...base.rootfs, size_gb: Math.max(base.rootfs?.size_gb ?? src.diskGb, src.diskGb) } };
    const snapshot = await this.#serialized(src.id, async () => {
      if (checkpoint) return { path: this.#runner.checkpointDisk(src, checkpoint.id), discard: async () => undefined };
      assertLegal('checkpoint', this.#machines.get(app, src.id).state, src.id);
      return this.#runner.snapshotDisk(src);
    });
    try {
      const names = Array.from({ length: count }, (_, i) => (req.name ? (count === 1 ? req.name : `${req.name}-${i + 1}`) : undefined));
      return await Promise.all(
        names.map((name) =>
          this.#machines.create(app, { config, ...(name ? { name } : {}), ...(req.skip_launch ? { skip_launch: true } : {}) }, { ...opts, disk: { from: snapshot.path, uidBase: src.uidBase } }),
        ),
      );
    } finally {
      await snapshot.discard();
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
    const previous = this.#queues.get(machineId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    const settled = next.catch(() => undefined);
    this.#queues.set(machineId, settled);
    void settled.then(() => {
      if (this.#queues.get(machineId) === settled) this.#queues.delete(machineId);
    });
    return next;
  }
}
