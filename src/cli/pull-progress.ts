import type { PullProgress } from '../images/image-service.ts';

// One redrawn line on a terminal ("downloading 3 layers  12.5/40.1 MB  31%"); plain lines
// per phase change when stderr is not a terminal (CI logs, robots).

export class PullProgressView {
  readonly #out: NodeJS.WriteStream;
  readonly #layers = new Map<string, { done: number }>();
  #lastPhase = '';
  #drawn = false;

  constructor(out: NodeJS.WriteStream) {
    this.#out = out;
  }

  update(p: PullProgress): void {
    if (p.phase === 'download') this.#layers.set(p.digest, { done: p.doneBytes });
    const text = this.#describe(p);
    if (this.#out.isTTY) {
      this.#out.write(`\r\x1b[K${text}`);
      this.#drawn = true;
    } else if (p.phase !== this.#lastPhase || p.phase === 'build') {
      this.#out.write(text + '\n');
    }
    this.#lastPhase = p.phase;
  }

  finish(): void {
    if (this.#drawn) this.#out.write('\n');
    this.#drawn = false;
  }

  #describe(p: PullProgress): string {
    switch (p.phase) {
      case 'resolve':
        return `resolving ${p.ref}`;
      case 'download': {
        let done = 0;
        for (const l of this.#layers.values()) done += l.done;
        const total = p.pullBytes;
        const pct = total ? Math.floor((done / total) * 100) : 0;
        const width = 24;
        const bar = '#'.repeat(Math.floor((pct / 100) * width)).padEnd(width, '.');
        return `downloading ${p.layers} layer(s) [${bar}] ${mb(done)}/${mb(total)} MB ${pct}%`;
      }
      case 'unpack':
        return `unpacking ${p.digest.slice(0, 19)}`;
      case 'build':
        return `building: ${p.message}`;
      case 'done':
        return `done ${p.name} ${p.manifestDigest.slice(0, 19)}`;
    }
  }
}

function mb(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}
