// A machine's own disk: an ext4 filesystem in a sparse image file in the storage pool, holding the
// overlay's writable layer. Its size is the machine's `rootfs.size_gb`: writing past it fails
// with ENOSPC inside the machine, and `df /` there shows it. Being one file in a pool that clones
// by reflink, the whole disk is captured or copied in one cheap call (checkpoints, forks).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants, statfsSync, statSync } from 'node:fs';
import { copyFile, mkdir, readdir, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';
import { mountImage, MS_NODEV, MS_NOSUID, thaw, withFrozen } from './loop-device.ts';
import { isMounted, unmount } from './overlay-rootfs.ts';
import type { StoragePool } from './storage-pool.ts';

const run = promisify(execFile);
const GIB = 2 ** 30;

export type DiskUsage = { sizeBytes: number; usedBytes: number };

export class MachineDisks {
  readonly #pool: StoragePool;
  readonly #mountPointOf: (id: string) => string;
  /** Templates being made, so concurrent creates of one size make it once. */
  readonly #templates = new Map<string, Promise<string>>();

  constructor(pool: StoragePool, mountPointOf: (id: string) => string) {
    this.#pool = pool;
    this.#mountPointOf = mountPointOf;
  }

  image(id: string): string {
    return join(this.#pool.root, 'disks', `${id}.ext4`);
  }

  /** Where a checkpoint of the machine's disk is kept: a reflinked copy of the disk image. */
  checkpointImage(id: string, checkpointId: string): string {
    return join(this.#pool.root, 'checkpoints', id, `${checkpointId}.ext4`);
  }

  mountPoint(id: string): string {
    return this.#mountPointOf(id);
  }

  /** The machine's disk, mounted: made on first use, a clone of the pool's empty image of that size. */
  async prepare(id: string, sizeGb: number): Promise<void> {
    if (!(await isFile(this.image(id)))) {
      const template = await this.#template(sizeGb);
      await mkdir(join(this.#pool.root, 'disks'), { recursive: true });
      await copyFile(template, this.image(id), constants.COPYFILE_FICLONE_FORCE);
    }
    await this.ensureMounted(id);
  }

  /** Whether the disk exists and is smaller than `sizeGb` (the config asks for more). */
  async isSmallerThan(id: string, sizeGb: number): Promise<boolean> {
    const s = await stat(this.image(id)).catch(() => undefined);
    return s !== undefined && s.size < sizeGb * GIB;
  }

  /** Replaces the machine's disk by a clone of `image` (a checkpoint's, or another machine's). */
  async cloneFrom(id: string, image: string): Promise<void> {
    await mkdir(join(this.#pool.root, 'disks'), { recursive: true });
    const partial = `${this.image(id)}.partial`;
    await copyFile(image, partial, constants.COPYFILE_FICLONE_FORCE);
    await rename(partial, this.image(id));
  }

  async ensureMounted(id: string): Promise<void> {
    const target = this.mountPoint(id);
    if (await isMounted(target)) return;
    await mkdir(target, { recursive: true });
    mountImage(this.image(id), target, { fstype: 'ext4', flags: MS_NODEV });
  }

  async unmount(id: string): Promise<void> {
    await unmount(this.mountPoint(id));
  }

  /**
   * A consistent copy of the mounted disk at `dest`, shared block for block until either side
   * writes. The filesystem is frozen for the copy: the machine's writers wait, they do not fail.
   */
  async capture(id: string, dest: string): Promise<void> {
    const target = this.mountPoint(id);
    await mkdir(dirname(dest), { recursive: true });
    // Flushed first, off the event loop, so the freeze (synchronous) has next to nothing to write.
    await run('sync', ['-f', target]);
    const partial = `${dest}.partial`;
    await withFrozen(target, () => copyFile(this.image(id), partial, constants.COPYFILE_FICLONE_FORCE));
    await rename(partial, dest);
  }

  /** A consistent copy of the mounted disk to fork machines from; discard it when they have theirs. */
  async snapshot(id: string): Promise<string> {
    const dest = join(this.#pool.root, 'forks', `${id}-${randomBytes(4).toString('hex')}.ext4`);
    await this.capture(id, dest);
    return dest;
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
    await mkdir(target, { recursive: true });
    // noload: a capture is made frozen, so its journal has nothing to replay (and the device is read-only).
    mountImage(image, target, { fstype: 'ext4', flags: MS_NODEV | MS_NOSUID, data: 'noload', readOnly: true });
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
      for (const name of await readdir(join(checkpoints, machine)).catch(() => [] as string[])) {
        if (!known?.has(name.replace(/\.ext4$/, ''))) {
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
    await rm(join(this.#pool.root, 'checkpoints', id), { recursive: true, force: true });
  }

  /** What the machine's filesystem holds and can hold, as `df` inside it shows; undefined while unmounted. */
  usage(id: string): DiskUsage | undefined {
    const target = this.mountPoint(id);
    // A mount point sits on another device than its parent: two stats, not a read of the mount table.
    const [here, parent] = [statSync(target, { throwIfNoEntry: false }), statSync(dirname(target), { throwIfNoEntry: false })];
    if (!here || !parent || here.dev === parent.dev) return undefined;
    const s = statfsSync(target);
    return { sizeBytes: s.blocks * s.bsize, usedBytes: (s.blocks - s.bfree) * s.bsize };
  }

  /**
   * Grows the disk to `sizeGb`; nothing may have it in use (the overlay above it is unmounted).
   * Offline: growing a mounted ext4 needs CAP_SYS_RESOURCE, which a daemon in a container may lack.
   */
  async grow(id: string, sizeGb: number): Promise<void> {
    await this.unmount(id);
    const image = this.image(id);
    await truncate(image, sizeGb * GIB);
    try {
      // resize2fs insists on a freshly checked filesystem; -p repairs only what is safe unattended.
      await run('e2fsck', ['-f', '-p', image]).catch((err: { code?: number }) => {
        if ((err.code ?? 8) >= 4) throw err;
      });
      await run('resize2fs', [image]);
    } catch (err) {
      throw new HangarError('storage_error', `cannot grow the disk of machine ${id}: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`, {
        hint: 'retry the update; the files are kept, and the disk keeps its old size until a grow succeeds',
        cause: err,
      });
    }
    await this.ensureMounted(id);
  }

  #template(sizeGb: number): Promise<string> {
    const path = join(this.#pool.root, 'templates', `ext4-${sizeGb}g`);
    let pending = this.#templates.get(path);
    if (!pending) {
      pending = makeTemplate(path, sizeGb);
      this.#templates.set(path, pending);
      pending.catch(() => this.#templates.delete(path));
    }
    return pending;
  }
}

async function makeTemplate(path: string, sizeGb: number): Promise<string> {
  if (await isFile(path)) return path;
  await mkdir(join(path, '..'), { recursive: true });
  const partial = `${path}.partial`;
  await writeFile(partial, '');
  await truncate(partial, sizeGb * GIB);
  try {
    // The image is sparse, so its zeroes need no writing; no reserved blocks (a machine's root
    // should get what its size says); a 16 MiB journal rather than one scaled to the size.
    await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', 'assume_storage_prezeroed=1,nodiscard', '-J', 'size=16', partial]);
  } catch (err) {
    await rm(partial, { force: true });
    throw new HangarError('host_unsupported', `cannot make a ${sizeGb} GB disk: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`, {
      hint: 'install e2fsprogs 1.47 or newer (apt-get install e2fsprogs)',
      cause: err,
    });
  }
  await rename(partial, path);
  return path;
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isFile(), () => false);
}
