import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

// Name → manifest digest, the only mutable state of the image store. One small JSON file, replaced
// atomically (write, fsync, rename), so a crash leaves either the old or the new table.

export type RefRecord = { manifestDigest: string; createdAt: string };

export class ImageRefs {
  readonly path: string;
  #table: Record<string, RefRecord> | undefined;
  #writing: Promise<void> = Promise.resolve();

  constructor(root: string) {
    this.path = join(root, 'refs.json');
  }

  async all(): Promise<Record<string, RefRecord>> {
    if (!this.#table) {
      const text = await readFile(this.path, 'utf8').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return '{}';
        throw err;
      });
      this.#table = JSON.parse(text) as Record<string, RefRecord>;
    }
    return this.#table;
  }

  async get(name: string): Promise<RefRecord | undefined> {
    return (await this.all())[name];
  }

  async set(name: string, record: RefRecord): Promise<void> {
    await this.#update((t) => {
      t[name] = record;
    });
  }

  async delete(name: string): Promise<boolean> {
    let found = false;
    await this.#update((t) => {
      found = name in t;
      delete t[name];
    });
    return found;
  }

  // Writes are chained so two updates never race on the temp file or lose each other's change.
  async #update(change: (table: Record<string, RefRecord>) => void): Promise<void> {
    const run = this.#writing.then(async () => {
      const table = await this.all();
      change(table);
      const tmp = `${this.path}.${randomBytes(4).toString('hex')}`;
      await writeFile(tmp, JSON.stringify(table, null, 2), { flush: true });
      await rename(tmp, this.path);
    });
    this.#writing = run.catch(() => {});
    await run;
  }
}
