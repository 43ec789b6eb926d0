// A machine disk made ahead, of the size last asked for: a clone of the size's template on its
// own loop device, its ext4 mounted nowhere yet (a detached mount only this daemon's descriptor
// holds). A create renames the image into place and moves the mount onto the machine's mount
// point, two calls instead of setting up a loop device and mounting ext4 on its path (~8 ms
// here). A daemon that dies drops the mount with its descriptors (the loop device clears
// itself); the next one sweeps the files.
import { randomBytes } from 'node:crypto';
import { chownSync, closeSync, mkdirSync, renameSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ImageTemplates } from './disk-image.ts';
import { openImageMount } from './loop-device.ts';
import { attachMount } from './mount-api.ts';

type ReadyDisk = { sizeGb: number; image: string; mount: number };

/** Enough for the create that took the last one to finish first (it took it early on), not more: the next create may come soon. */
const MAKE_DELAY_MS = 30;

export class ReadyDisks {
  readonly #dir: string;
  readonly #templates: ImageTemplates;
  /** MOUNT_ATTR_* flags of the mounts. */
  readonly #attrs: number;
  /** Directories made at the top of each disk, given to the taker's owner. */
  readonly #dirs: string[];
  /** One, of the size last asked for: a loop device is held for it. */
  #ready: ReadyDisk | undefined;
  #making = false;
  #sweep: Promise<unknown> | undefined;
  #closed = false;

  constructor(dir: string, templates: ImageTemplates, opts: { attrs: number; dirs: string[] }) {
    this.#dir = dir;
    this.#templates = templates;
    this.#attrs = opts.attrs;
    this.#dirs = opts.dirs;
  }

  /**
   * Moves the disk made ahead to `image`, mounted at `target`, its directories owned by `owner`,
   * if it is of `sizeGb`, and has the next one made, of that size. False when none was ready (the first create of a size makes
   * its own). True means the image is in place; should the mount not have moved, the caller
   * mounts it as usual.
   */
  async place(sizeGb: number, image: string, target: string, owner: number): Promise<boolean> {
    const ready = this.#ready;
    this.#ready = undefined;
    this.#makeNext(sizeGb);
    if (!ready) return false;
    if (ready.sizeGb !== sizeGb) {
      await drop(ready);
      return false;
    }
    try {
      mkdirSync(dirname(image), { recursive: true });
      mkdirSync(target, { recursive: true });
      for (const dir of this.#dirs) chownSync(`/proc/self/fd/${ready.mount}/${dir}`, owner, owner);
      // The loop device follows the file: it holds the inode, not the name.
      renameSync(ready.image, image);
    } catch {
      await drop(ready);
      return false;
    }
    try {
      attachMount(ready.mount, target);
    } catch {
      // Left to the caller's ordinary mount.
    } finally {
      closeSync(ready.mount);
    }
    return true;
  }

  /** Unmounts and removes what was made ahead. */
  async close(): Promise<void> {
    this.#closed = true;
    const ready = this.#ready;
    this.#ready = undefined;
    if (ready) await drop(ready);
  }

  #makeNext(sizeGb: number): void {
    if (this.#closed || this.#making) return;
    this.#making = true;
    setTimeout(() => void this.#make(sizeGb).finally(() => (this.#making = false)), MAKE_DELAY_MS).unref();
  }

  async #make(sizeGb: number): Promise<void> {
    // What an earlier daemon made ahead is no one's.
    this.#sweep ??= rm(this.#dir, { recursive: true, force: true }).then(() => mkdir(this.#dir, { recursive: true }));
    await this.#sweep;
    const name = `ext4-${sizeGb}g-${randomBytes(6).toString('hex')}`;
    const making = join(this.#dir, `making-${name}`);
    const image = join(this.#dir, name);
    let mount: number | undefined;
    try {
      await this.#templates.cloneTo(making, 'ext4', sizeGb);
      mount = await openImageMount(making, { fstype: 'ext4', attrs: this.#attrs });
      // Also what makes the filesystem read its bitmaps and inode tables from the image (~2 ms
      // here), which a create's first mkdir there would otherwise wait for, synchronously.
      for (const dir of this.#dirs) await mkdir(`/proc/self/fd/${mount}/${dir}`);
      if (this.#closed) throw new Error('closed meanwhile');
      // Named ready only now, in the step that keeps it: whoever sees the name (a test, an operator) sees one to take.
      renameSync(making, image);
      this.#ready = { sizeGb, image, mount };
    } catch {
      // The next create makes its disk itself and has another made.
      if (mount !== undefined) closeSync(mount);
      await rm(making, { force: true }).catch(() => undefined);
    }
  }
}

/** Unmounts a disk made ahead (closing its mount is all it takes) and removes its image. */
async function drop(disk: ReadyDisk): Promise<void> {
  closeSync(disk.mount);
  await rm(disk.image, { force: true }).catch(() => undefined);
}

