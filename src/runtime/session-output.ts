// Reads a session's output (session-files.ts: chunk N of OUTPUT_CHUNK_BYTES holds the bytes from
// N * OUTPUT_CHUNK_BYTES on) by absolute byte offset: what is kept, a range of it, or everything
// from an offset on as it is written. Reads are bounded: a follower holds one piece in memory.
import { type FSWatcher, watch } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { OUTPUT_CHUNK_BYTES, OUTPUT_DIGITS, OUTPUT_PREFIX } from './session-files.ts';

/** Bytes [start, end) of everything the session wrote are still kept. */
export type OutputWindow = { start: number; end: number };

export type OutputPiece =
  /** Bytes from `offset` on; `data.length` of them. */
  | { type: 'output'; offset: number; data: Buffer }
  /** Bytes [from, to) are no longer kept (older than the scrollback) and were skipped. */
  | { type: 'gap'; from: number; to: number };

const PIECE_BYTES = 64 * 1024;
const POLL_MS = 250;

function chunkFile(dir: string, index: number): string {
  return join(dir, OUTPUT_PREFIX + String(index).padStart(OUTPUT_DIGITS, '0'));
}

async function chunkIndexes(dir: string): Promise<number[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names
    .filter((n) => n.startsWith(OUTPUT_PREFIX) && n.length === OUTPUT_PREFIX.length + OUTPUT_DIGITS)
    .map((n) => Number.parseInt(n.slice(OUTPUT_PREFIX.length), 10))
    .filter(Number.isFinite)
    .sort((a, b) => a - b);
}

export async function outputWindow(dir: string): Promise<OutputWindow> {
  const indexes = await chunkIndexes(dir);
  if (indexes.length === 0) return { start: 0, end: 0 };
  const last = indexes.at(-1)!;
  const size = await stat(chunkFile(dir, last)).then((s) => s.size, () => 0);
  return { start: indexes[0]! * OUTPUT_CHUNK_BYTES, end: last * OUTPUT_CHUNK_BYTES + size };
}

/**
 * Up to `maxBytes` from `offset` on, in pieces of at most PIECE_BYTES, as far as has been written.
 * An offset older than the scrollback yields a gap first. Ends at the end of what is written now.
 */
export async function* readOutput(dir: string, offset: number, maxBytes = Number.POSITIVE_INFINITY): AsyncGenerator<OutputPiece> {
  let position = offset;
  let left = maxBytes;
  while (left > 0) {
    const window = await outputWindow(dir);
    if (position < window.start) {
      yield { type: 'gap', from: position, to: window.start };
      position = window.start;
    }
    if (position >= window.end) return;
    const index = Math.floor(position / OUTPUT_CHUNK_BYTES);
    const file = await open(chunkFile(dir, index), 'r').catch(() => undefined);
    if (!file) continue; // deleted since we looked: the window has moved on
    try {
      const want = Math.min(PIECE_BYTES, left, (index + 1) * OUTPUT_CHUNK_BYTES - position);
      const buf = Buffer.alloc(want);
      const { bytesRead } = await file.read(buf, 0, want, position - index * OUTPUT_CHUNK_BYTES);
      if (bytesRead === 0) return;
      yield { type: 'output', offset: position, data: buf.subarray(0, bytesRead) };
      position += bytesRead;
      left -= bytesRead;
    } finally {
      await file.close();
    }
  }
}

/**
 * Everything from `offset` on as it is written, until `ended()` says the session is over (then
 * what is left is read and the generator returns) or the signal aborts. `ended` must only say
 * so once all output is on disk (the shim writes its exit file after the last byte).
 */
export async function* followOutput(dir: string, offset: number, ended: () => boolean, signal: AbortSignal): AsyncGenerator<OutputPiece> {
  let wake: (() => void) | undefined;
  const poke = () => {
    wake?.();
    wake = undefined;
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, { persistent: false }, poke);
    watcher.on('error', () => watcher?.close());
  } catch {
    // no inotify: polling still works
  }
  const timer = setInterval(poke, POLL_MS);
  signal.addEventListener('abort', poke, { once: true });
  let position = offset;
  try {
    while (!signal.aborted) {
      const over = ended();
      let read = false;
      for await (const piece of readOutput(dir, position)) {
        position = piece.type === 'gap' ? piece.to : piece.offset + piece.data.length;
        read = true;
        yield piece;
        if (signal.aborted) return;
      }
      if (over && !read) return;
      if (!read) await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    clearInterval(timer);
    watcher?.close();
    signal.removeEventListener('abort', poke);
  }
}
