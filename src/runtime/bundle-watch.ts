// Waits for a file-backed condition in a bundle directory: inotify for speed, polling as the
// fallback (inotify can miss events on some filesystems, and watchers die with their directory).
import { type FSWatcher, watch } from 'node:fs';

/**
 * Calls `check` on every change in `dir` and every `pollMs`; the first defined result goes to
 * `onResult`, exactly once. Returns a function that stops watching.
 */
export function watchBundle<T>(dir: string, check: () => T | undefined, onResult: (result: T) => void, pollMs: number): () => void {
  let stopped = false;
  let watcher: FSWatcher | undefined;
  const stop = () => {
    stopped = true;
    watcher?.close();
    clearInterval(timer);
  };
  const tick = () => {
    if (stopped) return;
    const result = check();
    if (result === undefined) return;
    stop();
    onResult(result);
  };
  try {
    watcher = watch(dir, { persistent: false }, tick);
    watcher.on('error', () => watcher?.close());
  } catch {
    // The directory may not exist yet or inotify may be exhausted; polling still works.
  }
  // Kept referenced: whoever awaits a start or an exit needs the process to stay up until it comes.
  const timer = setInterval(tick, pollMs);
  setImmediate(tick);
  return stop;
}
