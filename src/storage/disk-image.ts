// A filesystem in a sparse image file in the storage pool: what a machine's disk and a volume both
// are. New images are reflinked clones of an empty one per filesystem and size (a template), so
// making one writes nothing; a consistent copy of a mounted image is a freeze around one clone.
import { execFile } from 'node:child_process';
import { constants, mkdirSync, statfsSync, statSync } from 'node:fs';
import { copyFile, mkdir, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';
import { mountImage, refreshLoopCapacity, withFrozen } from './loop-device.ts';
import type { FsParam } from './mount-api.ts';
import { isDeviceMounted, isMounted } from './overlay-rootfs.ts';

const run = promisify(execFile);
export const GIB = 2 ** 30;

export type FsType = 'ext4' | 'xfs';
export type DiskUsage = { sizeBytes: number; usedBytes: number; blockSize: number; blocks: number; blocksFree: number; blocksAvail: number };

/**
 * Empty images, one per filesystem and size, made once and cloned for every new disk or volume.
 * One clone of each template in use is made ahead (a spare), so a create renames a file instead
 * of waiting for the clone; spares left by an earlier daemon are discarded at its first clone.
 */
export class ImageTemplates {
  readonly #dir: string;
  readonly #sparesDir: string;
  readonly #pending = new Map<string, Promise<string>>();
  /** Template path → a complete clone of it, ready to be renamed. */
  readonly #spares = new Map<string, string>();
  readonly #refilling = new Set<string>();
  #sweep: Promise<void> | undefined;

  constructor(poolRoot: string) {
    this.#dir = join(poolRoot, 'templates');
    this.#sparesDir = join(this.#dir, 'spares');
  }

  /** Makes `dest` an empty filesystem of `sizeGb`, sharing every block with the template. */
  async cloneTo(dest: string, fs: FsType, sizeGb: number): Promise<void> {
    const template = await this.#template(fs, sizeGb);
    const spare = this.#spares.get(template);
    this.#spares.delete(template);
    try {
      if (spare) {
        await mkdir(dirname(dest), { recursive: true });
        await rename(spare, dest);
        return;
      }
      await cloneImage(template, dest);
    } finally {
      this.#refill(template);
    }
  }

  #template(fs: FsType, sizeGb: number): Promise<string> {
    const path = join(this.#dir, `${fs}-${sizeGb}g`);
    let pending = this.#pending.get(path);
    if (!pending) {
      pending = makeTemplate(path, fs, sizeGb);
      this.#pending.set(path, pending);
      pending.catch(() => this.#pending.delete(path));
    }
    return pending;
  }

  /** Clones the next spare of `template`, a moment later: the create under way goes first. */
  #refill(template: string): void {
    if (this.#spares.has(template) || this.#refilling.has(template)) return;
    this.#refilling.add(template);
    setTimeout(() => {
      this.#sweep ??= rm(this.#sparesDir, { recursive: true, force: true });
      const spare = join(this.#sparesDir, `${basename(template)}-${randomBytes(6).toString('hex')}`);
      void this.#sweep
        .then(() => cloneImage(template, spare))
        .then(
          () => this.#spares.set(template, spare),
          () => rm(spare, { force: true }).catch(() => undefined), // the next clone tries again
        )
        .finally(() => this.#refilling.delete(template));
    }, SPARE_DELAY_MS).unref();
  }
}

const SPARE_DELAY_MS = 100;

async function makeTemplate(path: string, fs: FsType, sizeGb: number): Promise<string> {
  if (isFile(path)) return path;
  await mkdir(dirname(path), { recursive: true });
  const partial = `${path}.partial`;
  await writeFile(partial, '');
  await truncate(partial, sizeGb * GIB);
  try {
    await run(`mkfs.${fs}`, [...MKFS_ARGS[fs], partial]);
  } catch (err) {
    await rm(partial, { force: true });
    throw new HangarError('host_unsupported', `cannot make a ${sizeGb} GB ${fs} filesystem: ${stderrOf(err)}`, {
      hint: fs === 'ext4' ? 'install e2fsprogs 1.47 or newer (apt-get install e2fsprogs)' : 'install xfsprogs (apt-get install xfsprogs)',
      cause: err,
    });
  }
  await rename(partial, path);
  return path;
}

const MKFS_ARGS: Record<FsType, string[]> = {
  // The image is sparse, so its zeroes need no writing; no reserved blocks (the owner should get
  // what the size says); a 16 MiB journal rather than one scaled to the size.
  ext4: ['-q', '-F', '-m', '0', '-E', 'assume_storage_prezeroed=1,nodiscard', '-J', 'size=16'],
  // No reflink inside (it reserves metadata space and nothing in a volume clones); 4 KiB sectors
  // like the loop device's blocks. The log is xfsprogs' minimum of 64 MiB, shared with the template.
  xfs: ['-q', '-K', '-m', 'reflink=0', '-s', 'size=4096'],
};

/** Mount parameters each filesystem needs: clones of one template share an XFS uuid, which XFS refuses twice. */
const MOUNT_PARAMS: Record<FsType, FsParam[]> = { ext4: [], xfs: [['nouuid']] };

/** A copy of `src` at `dest` sharing every block (the pool clones by reflink); replaces `dest` whole. */
export async function cloneImage(src: string, dest: string): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  const partial = `${dest}.partial`;
  await copyFile(src, partial, constants.COPYFILE_FICLONE_FORCE);
  await rename(partial, dest);
}

/** Mounts `image` at `target` unless a filesystem is mounted there; `attrs` are MOUNT_ATTR_* flags. */
export async function mountDiskImage(image: string, target: string, fs: FsType, attrs: number, opts: { readOnly?: boolean; params?: FsParam[] } = {}): Promise<void> {
  if (isDeviceMounted(target)) return;
  mkdirSync(target, { recursive: true });
  await mountImage(image, target, { fstype: fs, attrs, params: [...MOUNT_PARAMS[fs], ...(opts.params ?? [])], ...(opts.readOnly ? { readOnly: true } : {}) });
}

export type Capture = { image: string; mountPoint: string; dest: string };

/**
 * Consistent copies of images at once, each shared block for block until either side writes. The
 * mounted ones are frozen together for the clones (their writers wait, they do not fail), so
 * images written by one program (a machine's disk and its volumes) are captured at one instant.
 */
export async function captureImages(captures: Capture[]): Promise<void> {
  const mounted = await Promise.all(captures.map((c) => isMounted(c.mountPoint)));
  // Flushed first, off the event loop, so each freeze (synchronous) has next to nothing to write.
  await Promise.all(captures.filter((_, i) => mounted[i]).map((c) => run('sync', ['-f', c.mountPoint])));
  const frozen = captures.filter((_, i) => mounted[i]).map((c) => c.mountPoint);
  const cloneAll = () => Promise.all(captures.map((c) => mkdir(dirname(c.dest), { recursive: true }).then(() => copyFile(c.image, `${c.dest}.partial`, constants.COPYFILE_FICLONE_FORCE))));
  const freezing = frozen.reduceRight<() => Promise<unknown>>((inner, mountPoint) => () => withFrozen(mountPoint, inner), cloneAll);
  try {
    await freezing();
  } catch (err) {
    await Promise.all(captures.map((c) => rm(`${c.dest}.partial`, { force: true })));
    throw err;
  }
  await Promise.all(captures.map((c) => rename(`${c.dest}.partial`, c.dest)));
}

/**
 * Grows an unmounted ext4 image to `sizeGb`. Offline: growing a mounted ext4 needs
 * CAP_SYS_RESOURCE, which a daemon in a container may lack.
 */
export async function growExt4Offline(image: string, sizeGb: number): Promise<void> {
  await truncate(image, sizeGb * GIB);
  // resize2fs insists on a freshly checked filesystem; -p repairs only what is safe unattended.
  await run('e2fsck', ['-f', '-p', image]).catch((err: { code?: number }) => {
    if ((err.code ?? 8) >= 4) throw err;
  });
  await run('resize2fs', [image]);
}

/** Grows a mounted XFS image to `sizeGb` while it is in use (xfs_growfs needs only CAP_SYS_ADMIN). */
export async function growXfsOnline(image: string, mountPoint: string, sizeGb: number): Promise<void> {
  await truncate(image, sizeGb * GIB);
  const { stdout } = await run('findmnt', ['-n', '-o', 'SOURCE', '--mountpoint', mountPoint]);
  refreshLoopCapacity(stdout.trim());
  await run('xfs_growfs', [mountPoint]);
}

/** What the filesystem mounted at `target` holds and can hold, as `df` shows it; undefined while unmounted. */
export function usageOf(target: string): DiskUsage | undefined {
  // A mount point sits on another device than its parent: two stats, not a read of the mount table.
  const [here, parent] = [statSync(target, { throwIfNoEntry: false }), statSync(dirname(target), { throwIfNoEntry: false })];
  if (!here || !parent || here.dev === parent.dev) return undefined;
  const s = statfsSync(target);
  return {
    sizeBytes: s.blocks * s.bsize, usedBytes: (s.blocks - s.bfree) * s.bsize,
    blockSize: s.bsize, blocks: s.blocks, blocksFree: s.bfree, blocksAvail: s.bavail,
  };
}

export function imageBytes(image: string): number | undefined {
  return statSync(image, { throwIfNoEntry: false })?.size;
}

export function isFile(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}

export function stderrOf(err: unknown): string {
  return (err as { stderr?: string }).stderr?.trim() || (err as Error).message;
}
