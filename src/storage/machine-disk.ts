// A machine's own disk: an ext4 filesystem in a sparse image file in the storage pool, holding the
// overlay's writable layer. Its size is the machine's `rootfs.size_gb`: writing past it fails
// with ENOSPC inside the machine, and `df /` there shows it. Being one file in a pool that clones
// by reflink, the whole disk is captured or copied in one cheap call (checkpoints, forks).
import { randomBytes } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import { cloneImage, GIB, growExt4Offline, type DiskUsage, type ImageTemplates, imageBytes, isFile, mountDiskImage, stderrOf, usageOf } from './disk-image.ts';
import { thaw } from './loop-device.ts';
import { MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID } from './mount-api.ts';
import { unmount } from './overlay-rootfs.ts';
import { ReadyDisks } from './ready-disks.ts';
import type { StoragePool } from './storage-pool.ts';

export type { DiskUsage } from './disk-image.ts';

/** What the overlay keeps at the top of a machine's disk (machine-paths.ts). */
const WRITABLE_LAYER_DIRS = ['upper', 'work'];

export class MachineDisks {
  readonly #pool: StoragePool;
  readonly #templates: ImageTemplates;
  readonly #mountPointOf: (id: string) => string;
  readonly #ready: ReadyDisks;

  constructor(pool: StoragePool, templates: ImageTemplates, mountPointOf: (id: string) => string) {
    this.#pool = pool;
    this.#templates = templates;
    this.#mountPointOf = mountPointOf;
    this.#ready = new ReadyDisks(join(pool.root, 'ready'), templates, { attrs: MOUNT_ATTR_NODEV, dirs: WRITABLE_LAYER_DIRS });
  }

  image(id: string): string {
    return join(this.#pool.root, 'disks', `${id}.ext4`);
  }

  /** Where the machine's checkpoints are kept: reflinked copies of its disk (and of its volumes). */
  checkpointDir(id: string): string {
    return join(this.#pool.root, 'checkpoints', id);
  }

  checkpointImage(id: string, checkpointId: string): string {
    return join(this.checkpointDir(id), `${checkpointId}.ext4`);
  }

  mountPoint(id: string): string {
    return this.#mountPointOf(id);
  }

  /**
   * The machine's disk, mounted: made on first use, a clone of the pool's empty image of that
   * size. One made ahead comes with the overlay's directories, owned by `owner` (the machine's root).
   */
  async prepare(id: string, sizeGb: number, owner: number): Promise<void> {
    if (!isFile(this.image(id)) && !(await this.#ready.place(sizeGb, this.image(id), this.mountPoint(id), owner))) {
      await this.#templates.cloneTo(this.image(id), 'ext4', sizeGb);
    }
    await this.ensureMounted(id);
  }

  /** Drops the disks made ahead. */
  close(): Promise<void> {
    return this.#ready.close();
  }

  /** Whether the disk exists and is smaller than `sizeGb` (the config asks for more). */
  isSmallerThan(id: string, sizeGb: number): boolean {
    const size = imageBytes(this.image(id));
    return size !== undefined && size < sizeGb * GIB;
  }

  /** Replaces the machine's disk by a clone of `image` (a checkpoint's, or another machine's). */
  async cloneFrom(id: string, image: string): Promise<void> {
    await cloneImage(image, this.image(id));
  }

  async ensureMounted(id: string): Promise<void> {
    await mountDiskImage(this.image(id), this.mountPoint(id), 'ext4', MOUNT_ATTR_NODEV);
  }

  async unmount(id: string): Promise<void> {
    await unmount(this.mountPoint(id));
  }

  /** What capturing the mounted disk to `dest` takes; see captureImages. */
  capture(id: string, dest: string): { image: string; mountPoint: string; dest: string } {
    return { image: this.image(id), mountPoint: this.mountPoint(id), dest };
  }

  /** Where a copy of the disk to fork machines from goes; discard it when they have theirs. */
  forkImage(id: string): string {
    return join(this.#pool.root, 'forks', `${id}-${randomBytes(4).toString('hex')}.ext4`);
  }

  /** Mounts a checkpoint's disk read-only at `target`, to look at what it holds. */
  async mountCheckpoint(id: string, checkpointId: string, target: string): Promise<void> {
    await this.mountCapture(this.checkpointImage(id, checkpointId), target);
  }

  /**
   * Mounts a capture (a checkpoint's or a snapshot's image) read-only at `target`. The loop
   * device holds the image open: it may be unlinked once this returns.
   */
  async mountCapture(image: string, target: string): Promise<void> {
    // noload: a capture is made frozen, so its journal has nothing to replay (and the device is read-only).
    await mountDiskImage(image, target, 'ext4', MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID, { params: [['noload']], readOnly: true });
  }

  /**
   * After a daemon died mid-capture: thaws the disks it left frozen and removes what it half-made
   * (partial copies, fork snapshots, checkpoint images no record names). `live` maps each machine
   * with a disk to the checkpoints its records name. Answers what it did, for the daemon's log.
   */
  async recover(live: Map<string, Set<string>>): Promise<string[]> {
    const done: string[] = [];
    for (const id of live.keys()) {
      if (this.usage(id) && thaw(this.mountPoint(id))) done.push(`thawed the disk of ${id}`);
    }
    await rm(join(this.#pool.root, 'forks'), { recursive: true, force: true });
    for (const name of await readdir(join(this.#pool.root, 'disks')).catch(() => [] as string[])) {
      if (name.endsWith('.partial') || !live.has(name.replace(/\.ext4$/, ''))) {
        await rm(join(this.#pool.root, 'disks', name), { force: true });
        done.push(`removed disks/${name}`);
      }
    }
    const checkpoints = join(this.#pool.root, 'checkpoints');
    for (const machine of await readdir(checkpoints).catch(() => [] as string[])) {
      const known = live.get(machine);
      // A checkpoint's files: CHECKPOINT.ext4 (the disk) and CHECKPOINT.VOLUME (each volume).
      for (const name of await readdir(join(checkpoints, machine)).catch(() => [] as string[])) {
        if (name.endsWith('.partial') || !known?.has(name.split('.')[0]!)) {
          await rm(join(checkpoints, machine, name), { force: true });
          done.push(`removed checkpoints/${machine}/${name}`);
        }
      }
      if (!known) await rm(join(checkpoints, machine), { recursive: true, force: true });
    }
    return done;
  }

  /** The disk and every checkpoint of it. */
  async remove(id: string): Promise<void> {
    await this.unmount(id);
    await rm(this.image(id), { force: true });
    await rm(this.checkpointDir(id), { recursive: true, force: true });
  }

  /** What the machine's filesystem holds and can hold, as `df` inside it shows; undefined while unmounted. */
  usage(id: string): DiskUsage | undefined {
    return usageOf(this.mountPoint(id));
  }

  /** Grows the disk to `sizeGb`; nothing may have it in use (the overlay above it is unmounted). */
  async grow(id: string, sizeGb: number): Promise<void> {
    await this.unmount(id);
    try {
      await growExt4Offline(this.image(id), sizeGb);
    } catch (err) {
      throw new HangarError('storage_error', `cannot grow the disk of machine ${id}: ${stderrOf(err)}`, {
        hint: 'retry the update; the files are kept, and the disk keeps its old size until a grow succeeds',
        cause: err,
      });
    }
    await this.ensureMounted(id);
  }
}
