import { statSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex } from './content-store.ts';
import { unpackLayer } from './layer-unpack.ts';

// Unpacked layers, one directory per compressed-layer digest, shared by every image that has the
// layer. Paths stay short (`<root>/layers/<hex>`) because machines stack many of them as overlay
// lowerdirs and the mount options are limited to a page.

export class LayerStore {
  readonly dir: string;
  readonly #inFlight = new Map<string, Promise<void>>();

  constructor(root: string) {
    this.dir = join(root, 'layers');
  }

  /** Creates the directory and drops temp dirs a crashed unpack left behind. */
  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    for (const name of await readdir(this.dir)) {
      if (name.startsWith('.tmp-')) await rm(join(this.dir, name), { recursive: true, force: true });
    }
  }

  path(digest: string): string {
    return join(this.dir, digestHex(digest));
  }

  /** Synchronous: every create asks it of each of its image's layers; a stat takes microseconds. */
  has(digest: string): boolean {
    return statSync(this.path(digest), { throwIfNoEntry: false })?.isDirectory() ?? false;
  }

  /** Unpacks the blob unless already done; concurrent callers for one layer share the work. */
  async ensure(digest: string, blobPath: string, signal?: AbortSignal): Promise<boolean> {
    const running = this.#inFlight.get(digest);
    if (running) {
      await running;
      return false;
    }
    if (this.has(digest)) return false;
    const work = unpackLayer({ blobPath, digest, target: this.path(digest), signal });
    this.#inFlight.set(digest, work);
    try {
      await work;
    } finally {
      this.#inFlight.delete(digest);
    }
    return true;
  }

  async list(): Promise<string[]> {
    const names = await readdir(this.dir);
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  async delete(digest: string): Promise<void> {
    await rm(this.path(digest), { recursive: true, force: true });
  }
}
