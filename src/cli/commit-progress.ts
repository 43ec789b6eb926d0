import type { CommitProgress } from '../protocol/commit.ts';

// A commit's progress on stderr: one redrawn line on a terminal, a line per phase elsewhere
// (CI logs, robots), as pull-progress.ts does for pulls.

export class CommitProgressView {
  readonly #out: NodeJS.WriteStream;
  #lastKey = '';
  #drawn = false;

  constructor(out: NodeJS.WriteStream) {
    this.#out = out;
  }

  update(p: CommitProgress): void {
    const text = describe(p);
    // Off a terminal, one line per phase, and per blob while pushing.
    const key = p.phase === 'push' ? `push ${p.blobIndex}` : p.phase;
    if (this.#out.isTTY) {
      this.#out.write(`\r\x1b[K${text}`);
      this.#drawn = true;
    } else if (key !== this.#lastKey) {
      this.#out.write(text + '\n');
    }
    this.#lastKey = key;
  }

  finish(): void {
    if (this.#drawn) this.#out.write('\n');
    this.#drawn = false;
  }
}

function describe(p: CommitProgress): string {
  switch (p.phase) {
    case 'capture':
      return p.source === 'live' ? 'capturing the filesystem' : `opening checkpoint ${p.source}`;
    case 'layer':
      return `packing the layer: ${p.entries} entries, ${mb(p.bytes)} MB`;
    case 'store':
      return `stored ${p.digest.slice(0, 19)}`;
    case 'push': {
      const what = `pushing blob ${p.blobIndex}/${p.blobs} ${p.digest.slice(7, 19)}`;
      return p.skipped ? `${what} (already there)` : `${what} ${mb(p.doneBytes)}/${mb(p.totalBytes)} MB`;
    }
    case 'manifest':
      return `pushing the manifest of ${p.ref}`;
    case 'done':
      return `done ${p.image} ${p.digest.slice(0, 19)}`;
  }
}

function mb(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}
