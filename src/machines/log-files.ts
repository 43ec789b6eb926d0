import { open, stat } from 'node:fs/promises';
import { watch } from 'node:fs';
import { LineSplitter } from './log-lines.ts';

// A machine's stdout and stderr file (`current` of its log directory, capped as it is written and
// rotated by rename: see run-files.ts), read by tail, followed by polling plus inotify, always in
// bounded chunks and lines (log-lines.ts).

/** The most of the log a tail reads, whatever number of lines it asks for. */
const MAX_TAIL_BYTES = 8 * 2 ** 20;
const READ_CHUNK_BYTES = 64 * 1024;
const POLL_MS = 500;

/** The last `lines` lines of the log (current file only) and the offset to follow from. */
export async function tailLines(path: string, lines: number): Promise<{ lines: string[]; offset: number }> {
  const file = await open(path, 'r').catch(() => undefined);
  if (!file) return { lines: [], offset: 0 };
  try {
    const { size } = await file.stat();
    const want = Math.min(size, MAX_TAIL_BYTES, Math.max(64 * 1024, lines * 256));
    const buf = Buffer.alloc(want);
    const { bytesRead } = await file.read(buf, 0, want, size - want);
    let bytes = buf.subarray(0, bytesRead);
    // The window starts mid-line unless it is the whole file; that first piece is not a line.
    if (want < size && bytes.includes(0x0a)) bytes = bytes.subarray(bytes.indexOf(0x0a) + 1);
    const splitter = new LineSplitter();
    const all = [...splitter.push(bytes), ...splitter.flush()];
    return { lines: lines === 0 ? [] : all.slice(-lines), offset: size - want + bytesRead };
  } finally {
    await file.close();
  }
}

/**
 * The lines appended after `offset`, in batches of at most READ_CHUNK_BYTES of log, until the
 * signal aborts. The log is read only as fast as the caller takes batches, so a slow reader (or
 * a machine writing gigabytes) costs one chunk and one line of memory, no more.
 */
export async function* followLines(path: string, offset: number, signal: AbortSignal): AsyncGenerator<string[]> {
  let wake: (() => void) | undefined;
  const poke = () => {
    wake?.();
    wake = undefined;
  };
  const watcher = (() => {
    try {
      return watch(path, poke).on('error', () => undefined);
    } catch {
      return undefined; // no log yet: polling finds it
    }
  })();
  const timer = setInterval(poke, POLL_MS);
  signal.addEventListener('abort', poke, { once: true });
  const splitter = new LineSplitter();
  const buf = Buffer.alloc(READ_CHUNK_BYTES);
  let position = offset;
  try {
    while (!signal.aborted) {
      const size = await stat(path).then((s) => s.size, () => 0);
      if (size < position) position = 0; // rotated
      const file = size > position ? await open(path, 'r').catch(() => undefined) : undefined;
      if (!file) {
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      try {
        while (position < size && !signal.aborted) {
          const { bytesRead } = await file.read(buf, 0, Math.min(buf.length, size - position), position);
          if (bytesRead === 0) break;
          position += bytesRead;
          const lines = splitter.push(buf.subarray(0, bytesRead));
          if (lines.length > 0) yield lines;
        }
      } finally {
        await file.close();
      }
    }
  } finally {
    clearInterval(timer);
    watcher?.close();
    signal.removeEventListener('abort', poke);
  }
}
