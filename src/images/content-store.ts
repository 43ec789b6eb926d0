import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { HangarError } from '../protocol/errors.ts';

// Blobs addressed by sha256. Nothing becomes visible under blobs/ unless its bytes hashed to its
// name: writers stream into ingest/, hashing as they go, and rename only on a match. A download
// cut short leaves its ingest file behind so the next attempt can continue with a Range request.

const DIGEST = /^sha256:([a-f0-9]{64})$/;

export function digestHex(digest: string): string {
  const m = DIGEST.exec(digest);
  if (!m) {
    throw new HangarError('unsupported_image', `unsupported digest "${digest}"`, {
      hint: 'only sha256 digests are supported',
    });
  }
  return m[1] as string;
}

export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export function digestMismatch(expected: string, actual: string, what: string): HangarError {
  return new HangarError('digest_mismatch', `${what} has digest ${actual}, expected ${expected}`, {
    hint: 'the registry served corrupted or tampered content; retry the pull, and if it persists re-push the image',
    details: { expected, actual },
  });
}

/** An open resumable write of one blob; `offset` bytes are already on disk and hashed. */
export type Ingest = {
  offset: number;
  append(chunks: AsyncIterable<Uint8Array>, onBytes?: (total: number) => void): Promise<void>;
  /** Restart from zero (the server ignored our Range request). */
  reset(): Promise<void>;
  /** Verify and move into place; throws digest_mismatch and drops the partial file on a mismatch. */
  commit(): Promise<void>;
};

export class ContentStore {
  readonly root: string;
  readonly blobsDir: string;
  readonly ingestDir: string;

  constructor(root: string) {
    this.root = root;
    this.blobsDir = join(root, 'blobs', 'sha256');
    this.ingestDir = join(root, 'ingest');
  }

  async init(): Promise<void> {
    await mkdir(this.blobsDir, { recursive: true });
    await mkdir(this.ingestDir, { recursive: true });
  }

  blobPath(digest: string): string {
    return join(this.blobsDir, digestHex(digest));
  }

  ingestPath(digest: string): string {
    return join(this.ingestDir, digestHex(digest));
  }

  async has(digest: string): Promise<boolean> {
    return stat(this.blobPath(digest)).then(() => true, () => false);
  }

  async size(digest: string): Promise<number> {
    return (await stat(this.blobPath(digest))).size;
  }

  async readBytes(digest: string): Promise<Buffer> {
    const bytes = await readFile(this.blobPath(digest));
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw digestMismatch(digest, actual, `stored blob ${digest}`);
    return bytes;
  }

  /** Stores small content (manifests, configs) whose digest the caller already knows. */
  async writeBytes(bytes: Uint8Array, expected: string): Promise<void> {
    const actual = sha256Digest(bytes);
    if (actual !== expected) throw digestMismatch(expected, actual, 'content');
    if (await this.has(expected)) return;
    const tmp = join(this.ingestDir, `.${digestHex(expected)}.${randomBytes(4).toString('hex')}`);
    await writeFile(tmp, bytes, { flush: true });
    await rename(tmp, this.blobPath(expected));
  }

  async openIngest(digest: string): Promise<Ingest> {
    const path = this.ingestPath(digest);
    const hash = createHash('sha256');
    let offset = 0;
    const existing = await stat(path).catch(() => undefined);
    if (existing) {
      // Rehash what is already there: the hash state of an earlier process is gone.
      await pipeline(createReadStream(path), async function* (src: AsyncIterable<Buffer>) {
        for await (const chunk of src) {
          hash.update(chunk);
          offset += chunk.length;
        }
      });
    }
    let current = hash;
    const ingest: Ingest = {
      offset,
      append: async (chunks, onBytes) => {
        const fh = await open(path, 'a');
        try {
          let total = ingest.offset;
          for await (const chunk of chunks) {
            current.update(chunk);
            await fh.write(chunk);
            total += chunk.length;
            ingest.offset = total;
            onBytes?.(total);
          }
          await fh.sync();
        } finally {
          await fh.close();
        }
      },
      reset: async () => {
        await writeFile(path, '');
        current = createHash('sha256');
        ingest.offset = 0;
      },
      commit: async () => {
        const actual = `sha256:${current.digest('hex')}`;
        if (actual !== digest) {
          await unlink(path).catch(() => {});
          throw digestMismatch(digest, actual, `blob ${digest}`);
        }
        await rename(path, this.blobPath(digest));
      },
    };
    return ingest;
  }

  /** Stores a stream whose digest is not known in advance (locally built layers). */
  async writeStream(chunks: AsyncIterable<Uint8Array>): Promise<{ digest: string; size: number }> {
    const tmp = join(this.ingestDir, `.new.${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    let size = 0;
    const fh = await open(tmp, 'w');
    try {
      for await (const chunk of chunks) {
        hash.update(chunk);
        size += chunk.length;
        await fh.write(chunk);
      }
      await fh.sync();
    } catch (err) {
      await fh.close();
      await unlink(tmp).catch(() => {});
      throw err;
    }
    await fh.close();
    const digest = `sha256:${hash.digest('hex')}`;
    await rename(tmp, this.blobPath(digest));
    return { digest, size };
  }

  async listDigests(): Promise<string[]> {
    const names = await readdir(this.blobsDir);
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  async delete(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
  }
}
