import { randomBytes } from 'node:crypto';
import { HangarError } from '../protocol/errors.ts';
import { DEFAULT_SNAPSHOT_RETENTION_DAYS, DEFAULT_VOLUME_SIZE_GB, type CreateVolumeRequest, type UpdateVolumeRequest } from '../protocol/volumes.ts';
import { captureImages, type DiskUsage, GIB, imageBytes } from '../storage/disk-image.ts';
import { VOLUME_FS, type VolumeDisks } from '../storage/volume-disk.ts';
import { KeyedQueue } from './keyed-queue.ts';
import type { Store } from './store.ts';
import { findVolume } from './volume-claims.ts';
import type { VolumeRecord, VolumeSnapshotRecord } from './volume-store.ts';
import type { LimitGuard } from './limits.ts';
import type { Caller } from './machine-service.ts';

// Volumes (Fly's Volumes API): filesystems of their own size that outlive machines. Made empty,
// as a copy of another volume (a fork) or of a snapshot; grown while in use; snapshotted at one
// instant even while a machine writes. Work on one volume runs one step at a time.

export class VolumeService {
  readonly #store: Store;
  readonly #disks: VolumeDisks;
  readonly #assertApp: (app: string) => void;
  readonly #limits: LimitGuard | undefined;
  readonly #queue = new KeyedQueue();

  constructor(deps: { store: Store; disks: VolumeDisks; assertApp: (app: string) => void; limits?: LimitGuard }) {
    this.#store = deps.store;
    this.#limits = deps.limits;
    this.#disks = deps.disks;
    this.#assertApp = deps.assertApp;
  }

  /** `caller`: whose call it is; the volume is charged to its token's budgets. */
  async create(app: string, req: CreateVolumeRequest, caller: Caller = {}): Promise<VolumeRecord> {
    this.#assertApp(app);
    const v = this.#newRecord(app, req.name, req.size_gb ?? DEFAULT_VOLUME_SIZE_GB, req);
    const source = req.source_volume_id ? findVolume(this.#store, app, req.source_volume_id) : undefined;
    const snapshot = req.snapshot_id ? this.#snapshot(app, req.snapshot_id) : undefined;
    // A copy holds all of what it copies: it cannot be smaller.
    const least = source?.sizeGb ?? snapshot?.sizeGb ?? 1;
    v.sizeGb = Math.max(req.size_gb ?? least, least);
    const who = { app, api: true, budgets: caller.budgets ?? [] };
    const fits = () => this.#limits?.assert(who, { kind: 'volume', addGb: v.sizeGb, newVolume: true });
    fits();
    try {
      if (source) {
        await this.#queue.run(source.id, () => captureImages([this.#disks.capture(source.id, this.#disks.image(v.id))]));
        await this.#disks.fitTo(v.id, v.sizeGb);
      } else if (snapshot) {
        await this.#disks.createFrom(v.id, this.#disks.snapshotImage(snapshot.volumeId, snapshot.id), v.sizeGb);
      } else {
        await this.#disks.create(v.id, v.sizeGb);
      }
      // Again, in the same synchronous step as the insert: others may have made volumes meanwhile.
      fits();
      this.#store.transaction(() => {
        this.#store.volumes.insert(v);
        this.#store.budgets.charge('volume', v.id, who.budgets.map((b) => b.id));
      });
    } catch (err) {
      await this.#disks.remove(v.id).catch(() => undefined);
      throw err;
    }
    return v;
  }

  /**
   * A new volume of the app holding what `image` holds, as large as it (a fork's copy of its
   * source's volume): the caller's, counted against its limits and its token's as any volume.
   */
  async createFromImage(app: string, name: string, image: string, caller: Caller): Promise<VolumeRecord> {
    const v = this.#newRecord(app, name, Math.ceil((imageBytes(image) ?? GIB) / GIB), {});
    const who = { app, api: false, budgets: caller.budgets ?? [] };
    const fits = () => this.#limits?.assert(who, { kind: 'volume', addGb: v.sizeGb, newVolume: true });
    fits();
    try {
      await this.#disks.createFrom(v.id, image, v.sizeGb);
      fits();
      this.#store.transaction(() => {
        this.#store.volumes.insert(v);
        this.#store.budgets.charge('volume', v.id, who.budgets.map((b) => b.id));
      });
    } catch (err) {
      await this.#disks.remove(v.id).catch(() => undefined);
      throw err;
    }
    return v;
  }

  list(app: string): VolumeRecord[] {
    this.#assertApp(app);
    return this.#store.volumes.list(app);
  }

  get(app: string, id: string): VolumeRecord {
    return findVolume(this.#store, app, id);
  }

  update(app: string, id: string, req: UpdateVolumeRequest): VolumeRecord {
    return this.#store.transaction(() => {
      const v = findVolume(this.#store, app, id);
      if (req.snapshot_retention !== undefined) v.snapshotRetention = req.snapshot_retention;
      if (req.auto_backup_enabled !== undefined) v.autoBackupEnabled = req.auto_backup_enabled;
      this.#store.volumes.update(v);
      return v;
    });
  }

  /** Grows the volume; a machine using it keeps running and sees the new size at once. */
  async extend(app: string, id: string, sizeGb: number, caller: Caller = {}): Promise<VolumeRecord> {
    findVolume(this.#store, app, id);
    return this.#queue.run(id, async () => {
      const v = findVolume(this.#store, app, id);
      if (sizeGb < v.sizeGb) {
        throw new HangarError('volume_cannot_shrink', `volume ${v.id} is ${v.sizeGb} GB; it cannot shrink to ${sizeGb} GB`, {
          hint: `give ${v.sizeGb} or more; to start smaller, create a new volume and copy what you need`,
          details: { size_gb: v.sizeGb, requested: sizeGb },
        });
      }
      if (sizeGb === v.sizeGb) return v;
      this.#limits?.assert({ app, api: true, budgets: caller.budgets ?? [] }, { kind: 'volume', addGb: sizeGb - v.sizeGb, newVolume: false });
      await this.#disks.grow(v.id, sizeGb);
      v.sizeGb = sizeGb;
      this.#store.volumes.update(v);
      return v;
    });
  }

  /** Destroys an unattached volume and its snapshots; answers it as it was, state destroyed. */
  async delete(app: string, id: string): Promise<VolumeRecord> {
    return this.#queue.run(id, async () => {
      const v = this.#store.transaction(() => {
        const found = findVolume(this.#store, app, id);
        if (found.attachedMachineId) {
          throw new HangarError('volume_attached', `volume ${found.id} is attached to machine ${found.attachedMachineId}`, {
            hint: `destroy machine ${found.attachedMachineId}, or update it without the volume in config.mounts, then delete the volume`,
            details: { volume_id: found.id, attached_machine_id: found.attachedMachineId },
          });
        }
        this.#store.volumes.delete(found.id);
        return found;
      });
      await this.#disks.remove(v.id);
      return v;
    });
  }

  /** Every volume of the app, for the app's deletion (its machines are destroyed first). */
  async deleteAll(app: string): Promise<void> {
    for (const v of this.#store.volumes.list(app)) await this.delete(app, v.id);
  }

  /** A snapshot of the volume as it is now, taken at one instant even while a machine writes. */
  async createSnapshot(app: string, id: string): Promise<VolumeSnapshotRecord> {
    findVolume(this.#store, app, id);
    return this.#queue.run(id, async () => {
      const v = findVolume(this.#store, app, id);
      const snapshotId = `vs_${randomId()}`;
      await captureImages([this.#disks.capture(v.id, this.#disks.snapshotImage(v.id, snapshotId))]);
      const s: VolumeSnapshotRecord = {
        id: snapshotId, volumeId: v.id, app, createdAt: new Date().toISOString(), sizeGb: v.sizeGb,
        sizeBytes: this.#disks.usage(v.id)?.usedBytes ?? 0,
      };
      this.#store.volumes.insertSnapshot(s);
      return s;
    });
  }

  listSnapshots(app: string, id: string): VolumeSnapshotRecord[] {
    return this.#store.volumes.listSnapshots(findVolume(this.#store, app, id).id);
  }

  usage(v: VolumeRecord): DiskUsage | undefined {
    return this.#disks.usage(v.id);
  }

  #snapshot(app: string, id: string): VolumeSnapshotRecord {
    const s = this.#store.volumes.getSnapshot(id);
    if (!s || s.app !== app) {
      throw new HangarError('volume_snapshot_not_found', `no volume snapshot ${id} in app ${app}`, {
        hint: `list a volume's snapshots: GET /v1/apps/${app}/volumes/VOLUME_ID/snapshots`,
        details: { snapshot_id: id, app },
      });
    }
    return s;
  }

  #newRecord(app: string, name: string, sizeGb: number, req: { snapshot_retention?: number; auto_backup_enabled?: boolean; encrypted?: boolean }): VolumeRecord {
    return {
      id: `vol_${randomId()}`, app, name, sizeGb, fstype: VOLUME_FS, attachedMachineId: null, createdAt: new Date().toISOString(),
      snapshotRetention: req.snapshot_retention ?? DEFAULT_SNAPSHOT_RETENTION_DAYS,
      // Hangar takes no snapshots on its own; the setting is kept for Fly clients that read it back.
      autoBackupEnabled: req.auto_backup_enabled ?? false,
      encrypted: false,
    };
  }
}

/** 16 characters of [0-9a-z], the shape of Fly's volume and snapshot ids. */
function randomId(): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
  return [...randomBytes(16)].map((b) => alphabet[b % 36]).join('');
}
