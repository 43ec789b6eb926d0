import type { FileWatchMessage } from '../protocol/file-watch.ts';
import { HangarError } from '../protocol/errors.ts';
import { MachineFsWatch } from '../storage/machine-fs-watch.ts';
import type { MachineRunner } from './machine-runner.ts';
import type { MachineService } from './machine-service.ts';
import type { StateChange } from './state-waiters.ts';

// The file watches robots hold open on started machines (GET …/files/watch), bounded per machine
// and in all, and ended when their machine stops: a stopped machine's files change only through
// the files API, and a restart may put a fresh filesystem in place.

export type FileWatchLimits = { perMachine: number; total: number; directoriesPerWatch: number };

export const DEFAULT_WATCH_LIMITS: FileWatchLimits = { perMachine: 16, total: 256, directoriesPerWatch: 4096 };

export type OpenWatch = { path: string; directories: number; close(): void };

export class FileWatches {
  readonly #machines: MachineService;
  readonly #runner: MachineRunner;
  readonly #limits: FileWatchLimits;
  /** Per machine id, each open watch's ender. */
  readonly #open = new Map<string, Set<(reason: string) => void>>();
  #total = 0;

  constructor(deps: { machines: MachineService; runner: MachineRunner; onStateChange: (listener: (change: StateChange) => void) => void; limits?: FileWatchLimits }) {
    this.#machines = deps.machines;
    this.#runner = deps.runner;
    this.#limits = deps.limits ?? DEFAULT_WATCH_LIMITS;
    deps.onStateChange((change) => {
      if (change.state === 'started') return;
      for (const end of [...(this.#open.get(change.id) ?? [])]) end(`machine ${change.id} is ${change.state}`);
    });
  }

  /** Watches `path` in a started machine; `send` gets every message, the last one `end`. */
  async open(app: string, id: string, path: string, recursive: boolean, send: (msg: FileWatchMessage) => void): Promise<OpenWatch> {
    const m = this.#machines.get(app, id);
    if (m.state !== 'started') {
      throw new HangarError('invalid_state', `cannot watch files of machine ${m.id}: it is ${m.state}`, {
        hint: `start it first (POST …/machines/${m.id}/start); a stopped machine's files change only through the files API`,
        details: { state: m.state },
      });
    }
    const mine = this.#open.get(m.id) ?? new Set();
    if (mine.size >= this.#limits.perMachine || this.#total >= this.#limits.total) {
      const which = mine.size >= this.#limits.perMachine ? `machine ${m.id} has ${mine.size} file watches open` : `${this.#total} file watches are open`;
      throw new HangarError('over_capacity', `${which}, the most allowed`, {
        hint: 'close a watch you no longer read; one recursive watch can cover a whole tree',
        details: { per_machine: this.#limits.perMachine, total: this.#limits.total },
      });
    }
    // Counted before the (slow) open, so a burst of requests cannot overshoot the limits.
    let ended = false;
    let watch: MachineFsWatch | undefined;
    const end = (reason: string) => {
      if (ended) return;
      ended = true;
      watch?.close();
      mine.delete(end);
      if (mine.size === 0) this.#open.delete(m.id);
      this.#total--;
      send({ type: 'end', reason });
    };
    mine.add(end);
    this.#open.set(m.id, mine);
    this.#total++;
    try {
      watch = await MachineFsWatch.open(await this.#runner.rootfs(m), path, {
        recursive,
        maxDirectories: this.#limits.directoriesPerWatch,
        onEvent: send,
        onNotice: send,
        onEnd: end,
      });
    } catch (err) {
      ended = true;
      mine.delete(end);
      if (mine.size === 0) this.#open.delete(m.id);
      this.#total--;
      throw err;
    }
    if (ended) watch.close(); // the machine stopped while the watch was being set up
    else send({ type: 'ready', path: watch.path, recursive, directories: watch.directories });
    const opened = watch;
    return { path: opened.path, directories: opened.directories, close: () => end('closed') };
  }
}
