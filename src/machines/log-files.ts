import { copyFile, open, rename, stat, truncate } from 'node:fs/promises';
import { watch } from 'node:fs';

// A machine's stdout and stderr file: size-capped by copy-and-truncate (the runtime appends with
// O_APPEND, so truncating in place is safe), read by tail, followed by polling plus inotify.

export const DEFAULT_LOG_MAX_BYTES = 8 * 2 ** 20;

export async function rotateIfLarge(path: string, maxBytes = DEFAULT_LOG_MAX_BYTES): Promise<boolean> {
  const size = await stat(path).then((s) => s.size, () => 0);
  if (size <= maxBytes) return false;
  // `.1` appears only once rotation is complete: copy aside, truncate, then rename into place.
  await copyFile(path, `${path}.1.tmp`);
  await truncate(path, 0);
  await rename(`${path}.1.tmp`, `${path}.1`);
  return true;
}

/** The last `lines` lines of the log (current file only) and the offset to follow from. */
export async function tailLines(path: string, lines: number): Promise<{ lines: string[]; offset: number }> {
  const file = await open(path, 'r').catch(() => undefined);
  if (!file) return { lines: [], offset: 0 };
  try {
    const { size } = await file.stat();
    const want = Math.min(size, Math.max(64 * 1024, lines * 256));
    const buf = Buffer.alloc(want);
    await file.read(buf, 0, want, size - want);
    let text = buf.toString('utf8');
    if (want < size) text = text.slice(text.indexOf('\n') + 1);
    const all = text.split('\n');
    if (all.at(-1) === '') all.pop();
    return { lines: lines === 0 ? [] : all.slice(-lines), offset: size };
  } finally {
    await file.close();
  }
}

/** Calls onLine for each complete line appended after `offset`, until the signal aborts. */
export async function followLines(path: string, offset: number, onLine: (line: string) => void, signal: AbortSignal): Promise<void> {
  let position = offset;
  let partial = '';
  let reading = false;
  const readMore = async () => {
    if (reading || signal.aborted) return;
    reading = true;
    try {
      const size = await stat(path).then((s) => s.size, () => 0);
      if (size < position) position = 0; // rotated
      if (size === position) return;
      const file = await open(path, 'r');
      try {
        const buf = Buffer.alloc(size - position);
        await file.read(buf, 0, buf.length, position);
        position = size;
        const text = partial + buf.toString('utf8');
        const parts = text.split('\n');
        partial = parts.pop() ?? '';
        for (const line of parts) onLine(line);
      } finally {
        await file.close();
      }
    } finally {
      reading = false;
    }
  };
  const watcher = (() => {
    try {
      return watch(path, () => void readMore());
    } catch {
      return undefined;
    }
  })();
  const timer = setInterval(() => void readMore(), 500);
  await readMore();
  await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  clearInterval(timer);
  watcher?.close();
}
