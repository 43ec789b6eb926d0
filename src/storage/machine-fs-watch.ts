import { watch, type FSWatcher, type Stats } from 'node:fs';
import { lstat, readdir, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import { at, errno, fdPath, MachineRoot, openChildDir } from './machine-fs-walk.ts';

// Watches a directory of a machine (running or not) for files created, changed, removed and
// renamed, as the machine sees them, through inotify on the host's view of its root filesystem:
// the overlay is one filesystem however many mounts show it, so what the machine does through its
// own mount is seen on the host's.
//
// Node's fs.watch is inotify without IN_DONT_FOLLOW on a path, so no path is ever given to it:
// each directory is opened the way the files API opens one (O_NOFOLLOW, relative to its parent's
// descriptor, machine-fs-walk.ts) and watched as `/proc/self/fd/N/.`, which the kernel resolves to
// exactly the directory the descriptor holds. The descriptor is closed at once; watches pin no
// mount. Likewise each batch of events is read back through descriptors opened from the machine's
// root, component by component, never through a symlink, and checked to still be the directory
// watched (device and inode).
//
// fs.watch says only "rename" (something appeared or vanished) or "change" for a name. Each
// directory keeps what it holds (name → inode and kind); a batch of raw events, in the order the
// kernel queued them, is compared with that and with what is there now:
//   vanished            → delete, or rename when the next raw event is a name appearing with the
//                         same inode (or one this batch saw only in passing), as inotify queues a
//                         rename's two halves back to back
//   appeared            → create (in a recursive watch a new directory is watched and its contents
//                         reported as created)
//   another inode there → modify (replaced, e.g. saved by rename over it); delete and create when
//                         it is another kind of thing (a directory replaced by a symlink)
// Changes that undo each other within one batch (BATCH_MS) may show as less than happened (a file
// moved away and back: nothing, or a create and delete of the name it had meanwhile).
//   "change"            → modify, at most once per path per batch, none for what the batch created

export type EntryKind = 'file' | 'directory' | 'symlink' | 'other';

/** Paths as the machine sees them; `kind` is unknown for a name that came and went between two looks. */
export type WatchEvent =
  | { type: 'create' | 'modify' | 'delete'; path: string; kind?: EntryKind }
  | { type: 'rename'; /** Where it went. */ path: string; from: string; kind?: EntryKind };

export type WatchNotice =
  | { type: 'overflow'; dropped: number }
  | { type: 'unwatched'; path: string; reason: string };

export type WatchOptions = {
  recursive: boolean;
  /** Directories one watch may hold at once; past it, new ones are reported and not watched. */
  maxDirectories: number;
  onEvent: (event: WatchEvent) => void;
  onNotice: (notice: WatchNotice) => void;
  /** The watched directory itself went away (or could no longer be read); nothing more comes. */
  onEnd: (reason: string) => void;
};

/** Names one watch remembers (what its directories hold), about 150 bytes each. */
const MAX_ENTRIES = 200_000;
/** Raw events a watch holds while a batch is being read back; more are dropped and counted. */
const MAX_PENDING = 8192;
/** Raw events are gathered this long, so a burst becomes one batch. */
const BATCH_MS = 20;
/** Entries reported as created when a directory appears with contents (moved in, made by mkdir -p). */
const MAX_SCAN_EVENTS = 1000;

type Entry = { ino?: number; kind?: EntryKind };

type Dir = {
  name: string;
  parent: Dir | undefined;
  dev: number;
  ino: number;
  entries: Map<string, Entry>;
  children: Map<string, Dir>;
  watcher: FSWatcher | undefined;
};

type Raw = { dir: Dir; type: 'rename' | 'change'; name: string };

export class MachineFsWatch {
  readonly path: string;
  readonly #rootfs: string;
  readonly #opts: WatchOptions;
  readonly #top: Dir;
  #dirs = 0;
  #entries = 0;
  /** Set once open() has watched everything: until then a limit is an error, not an end. */
  #opened = false;
  #pending: Raw[] = [];
  #dropped = 0;
  #timer: NodeJS.Timeout | undefined;
  #working: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(rootfs: string, guestPath: string, top: Dir, opts: WatchOptions) {
    this.#rootfs = rootfs;
    this.path = guestPath;
    this.#top = top;
    this.#opts = opts;
  }

  /** Starts watching `guestPath` (a directory); resolves once every directory is watched. */
  static async open(rootfs: string, guestPath: string, opts: WatchOptions): Promise<MachineFsWatch> {
    const root = await MachineRoot.open(rootfs);
    try {
      const r = await root.resolve(guestPath, { followLast: true });
      const fh = await root.openDir(r);
      try {
        const st = await fh.stat();
        const top: Dir = { name: '', parent: undefined, dev: st.dev, ino: st.ino, entries: new Map(), children: new Map(), watcher: undefined };
        const w = new MachineFsWatch(rootfs, r.guestPath, top, opts);
        try {
          await w.#watchDir(top, fh, { report: false, strict: true });
          w.#opened = true;
          if (w.#pending.length > 0) w.#schedule();
        } catch (err) {
          w.close();
          throw err;
        }
        return w;
      } finally {
        await fh.close();
      }
    } finally {
      await root.close();
    }
  }

  /** Directories watched now. */
  get directories(): number {
    return this.#dirs;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#unwatch(this.#top);
    this.#pending = [];
  }

  #end(reason: string): void {
    if (this.#closed) return;
    this.close();
    this.#opts.onEnd(reason);
  }

  #pathOf(dir: Dir, name?: string): string {
    const parts: string[] = [];
    for (let d: Dir | undefined = dir; d?.parent; d = d.parent) parts.unshift(d.name);
    const base = posix.join(this.path, ...parts);
    return name === undefined ? base : posix.join(base, name);
  }

  /**
   * Watches the directory `fh` holds, then records what it holds (contents made meanwhile are
   * seen either way). In a recursive watch, its subdirectories too. `report`: say each entry
   * found was created (a directory that appeared with contents). `strict`: a failure or the
   * directory limit is an error (the watch being opened), else a notice.
   */
  async #watchDir(dir: Dir, fh: FileHandle, how: { report: boolean; strict: boolean }, budget = { events: MAX_SCAN_EVENTS }): Promise<void> {
    if (this.#dirs >= this.#opts.maxDirectories) {
      const path = this.#pathOf(dir);
      if (how.strict) {
        throw new HangarError('over_capacity', `${this.path} has more than ${this.#opts.maxDirectories} directories to watch`, {
          hint: 'watch a narrower path, or without recursive=true',
          details: { path: this.path, max_directories: this.#opts.maxDirectories },
        });
      }
      this.#opts.onNotice({ type: 'unwatched', path, reason: `over the limit of ${this.#opts.maxDirectories} directories per watch` });
      return;
    }
    try {
      dir.watcher = watch(`${fdPath(fh)}/.`, { persistent: false }, (type, name) => this.#raw(dir, type, name));
    } catch (err) {
      // ENOSPC: the host's inotify watches (fs.inotify.max_user_watches) are used up.
      if (how.strict) throw new HangarError('over_capacity', `cannot watch ${this.#pathOf(dir)}: ${(err as Error).message}`, { hint: 'watch fewer directories, or raise fs.inotify.max_user_watches on the host', cause: err });
      this.#opts.onNotice({ type: 'unwatched', path: this.#pathOf(dir), reason: (err as Error).message });
      return;
    }
    dir.watcher.on('error', () => (dir === this.#top ? this.#end('the watched directory can no longer be read') : this.#unwatch(dir)));
    this.#dirs++;
    if (dir.parent) dir.parent.children.set(dir.name, dir);
    const names = await readdir(fdPath(fh));
    for (const name of names) {
      if (this.#closed) return;
      if (dir.entries.has(name)) continue;
      const st = await lstat(at(fh, name)).catch(() => undefined);
      if (!st) continue;
      this.#record(dir, name, { ino: st.ino, kind: kindOf(st) });
      if (how.report && budget.events-- > 0) this.#opts.onEvent({ type: 'create', path: this.#pathOf(dir, name), kind: kindOf(st) });
      if (this.#opts.recursive && st.isDirectory()) await this.#watchChild(dir, fh, name, st, how, budget);
    }
  }

  async #watchChild(parent: Dir, parentFh: FileHandle, name: string, st: Stats, how: { report: boolean; strict: boolean }, budget: { events: number }): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await openChildDir(parentFh, name, this.#pathOf(parent, name));
    } catch (err) {
      if (how.strict && !isGone(err)) throw err;
      return; // replaced or removed meanwhile: the parent's events say so
    }
    try {
      const now = await fh.stat();
      if (now.ino !== st.ino || now.dev !== st.dev) return;
      await this.#watchDir({ name, parent, dev: now.dev, ino: now.ino, entries: new Map(), children: new Map(), watcher: undefined }, fh, how, budget);
    } finally {
      await fh.close();
    }
  }

  /** What a directory holds, remembered; a watch that would remember too much ends (each name costs memory). */
  #record(dir: Dir, name: string, entry: Entry): void {
    if (!dir.entries.has(name)) this.#entries++;
    dir.entries.set(name, entry);
    if (this.#entries <= MAX_ENTRIES) return;
    if (!this.#opened) {
      throw new HangarError('over_capacity', `${this.path} holds more than ${MAX_ENTRIES} files and directories to watch`, {
        hint: 'watch a narrower path, or without recursive=true',
        details: { path: this.path, max_entries: MAX_ENTRIES },
      });
    }
    this.#end(`${this.path} came to hold more than ${MAX_ENTRIES} files and directories; watch a narrower path`);
  }

  #forget(dir: Dir, name: string): void {
    if (dir.entries.delete(name)) this.#entries--;
  }

  #unwatch(dir: Dir): void {
    this.#entries -= dir.entries.size;
    dir.entries.clear();
    for (const child of dir.children.values()) this.#unwatch(child);
    dir.children.clear();
    if (dir.watcher) {
      dir.watcher.close();
      dir.watcher = undefined;
      this.#dirs--;
    }
    if (dir.parent?.children.get(dir.name) === dir) dir.parent.children.delete(dir.name);
  }

  #raw(dir: Dir, type: string, name: string | Buffer | null): void {
    if (this.#closed || !dir.watcher) return;
    if (this.#pending.length >= MAX_PENDING) {
      this.#dropped++;
      return;
    }
    this.#pending.push({ dir, type: type === 'change' ? 'change' : 'rename', name: name === null ? '.' : name.toString() });
    // What happens while open() is still looking waits for it: nothing is reported before ready.
    if (this.#opened) this.#schedule();
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      this.#working = this.#working.then(() => this.#batch()).catch((err: Error) => this.#end(`the watch failed: ${err.message}`));
    }, BATCH_MS);
  }

  async #batch(): Promise<void> {
    const raws = this.#pending;
    this.#pending = [];
    if (this.#dropped > 0) {
      this.#opts.onNotice({ type: 'overflow', dropped: this.#dropped });
      this.#dropped = 0;
    }
    if (this.#closed || raws.length === 0) return;
    const root = await MachineRoot.open(this.#rootfs);
    const open = new Map<Dir, FileHandle | undefined>();
    try {
      const handle = (dir: Dir) => this.#reopen(dir, root.root, open);
      if (!(await handle(this.#top))) return this.#end(`${this.path} was removed or moved`);
      const modified = new Set<string>();
      for (let i = 0; i < raws.length; i++) {
        const { dir, type, name } = raws[i]!;
        if (this.#closed) return;
        if (name === '.' || !dir.watcher) continue; // the directory itself: its parent's events tell
        const fh = await handle(dir);
        if (!fh) continue; // gone or moved: its parent's events tell
        const path = this.#pathOf(dir, name);
        const known = dir.entries.get(name);
        if (type === 'change') {
          if (known && !modified.has(path)) {
            modified.add(path);
            this.#opts.onEvent({ type: 'modify', path, ...(known.kind ? { kind: known.kind } : {}) });
          }
          continue;
        }
        const now = await lstat(at(fh, name)).catch(() => undefined);
        if (known && now && known.ino === now.ino) continue; // nothing to see any more (e.g. moved away and back)
        if (known && !now) {
          this.#forget(dir, name);
          const next = raws[i + 1];
          const target = next && next.type === 'rename' && next.name !== '.' && next.dir.watcher ? await this.#appeared(next, handle) : undefined;
          if (target && (known.ino === undefined || known.ino === target.st.ino)) {
            i++;
            const to = this.#pathOf(next!.dir, next!.name);
            this.#record(next!.dir, next!.name, { ino: target.st.ino, kind: kindOf(target.st) });
            this.#opts.onEvent({ type: 'rename', path: to, from: path, kind: kindOf(target.st) });
            await this.#moved(dir, name, next!.dir, next!.name, target.st, target.fh);
            continue;
          }
          this.#opts.onEvent({ type: 'delete', path, ...(known.kind ? { kind: known.kind } : {}) });
          const child = dir.children.get(name);
          if (child) this.#unwatch(child);
          continue;
        }
        if (!now) {
          // Made and gone again before this look: it existed, what it was is unknown.
          this.#record(dir, name, {});
          modified.add(path);
          this.#opts.onEvent({ type: 'create', path });
          continue;
        }
        this.#record(dir, name, { ino: now.ino, kind: kindOf(now) });
        if (known) {
          const child = dir.children.get(name);
          if (child) this.#unwatch(child);
          modified.add(path);
          if (known.kind === kindOf(now)) {
            this.#opts.onEvent({ type: 'modify', path, kind: kindOf(now) });
          } else {
            // A directory became a symlink, say: not the same thing changed, another one in its place.
            this.#opts.onEvent({ type: 'delete', path, ...(known.kind ? { kind: known.kind } : {}) });
            this.#opts.onEvent({ type: 'create', path, kind: kindOf(now) });
          }
        } else {
          modified.add(path); // its writes are part of being made
          this.#opts.onEvent({ type: 'create', path, kind: kindOf(now) });
        }
        if (this.#opts.recursive && now.isDirectory()) await this.#watchChild(dir, fh, name, now, { report: true, strict: false }, { events: MAX_SCAN_EVENTS });
      }
    } finally {
      for (const fh of open.values()) await fh?.close().catch(() => undefined);
      await root.close();
    }
  }

  /** `raw` names something that is there now and was not known to its directory. */
  async #appeared(raw: Raw, handle: (dir: Dir) => Promise<FileHandle | undefined>): Promise<{ st: Stats; fh: FileHandle } | undefined> {
    const fh = await handle(raw.dir);
    if (!fh) return undefined;
    const st = await lstat(at(fh, raw.name)).catch(() => undefined);
    const known = raw.dir.entries.get(raw.name);
    return st && (!known || known.ino !== st.ino) ? { st, fh } : undefined;
  }

  /** After a rename: a watched directory keeps its watch under its new name; a replaced one is dropped. */
  async #moved(from: Dir, fromName: string, to: Dir, toName: string, st: Stats, toFh: FileHandle): Promise<void> {
    const replaced = to.children.get(toName);
    if (replaced) this.#unwatch(replaced);
    const child = from.children.get(fromName);
    if (child && child.ino === st.ino) {
      from.children.delete(fromName);
      child.name = toName;
      child.parent = to;
      to.children.set(toName, child);
    } else if (child) {
      this.#unwatch(child);
    } else if (this.#opts.recursive && st.isDirectory()) {
      await this.#watchChild(to, toFh, toName, st, { report: true, strict: false }, { events: MAX_SCAN_EVENTS });
    }
  }

  /** The directory `dir` is now, opened from the machine's root; undefined if it is no longer there as watched. */
  async #reopen(dir: Dir, root: FileHandle, open: Map<Dir, FileHandle | undefined>): Promise<FileHandle | undefined> {
    if (open.has(dir)) return open.get(dir);
    let fh: FileHandle | undefined;
    if (!dir.parent) {
      fh = await this.#openTop(root);
    } else {
      const parent = await this.#reopen(dir.parent, root, open);
      fh = parent ? await openChildDir(parent, dir.name, this.#pathOf(dir)).catch(() => undefined) : undefined;
    }
    if (fh) {
      const st = await fh.stat();
      if (st.ino !== dir.ino || st.dev !== dir.dev) {
        await fh.close();
        fh = undefined;
      }
    }
    open.set(dir, fh);
    return fh;
  }

  /** The watched directory by the real names it was resolved to, never through a symlink. */
  async #openTop(root: FileHandle): Promise<FileHandle | undefined> {
    let fh = root;
    const parts = this.path.split('/').filter(Boolean);
    try {
      for (const part of parts) {
        const next = await openChildDir(fh, part, this.path);
        if (fh !== root) await fh.close();
        fh = next;
      }
    } catch {
      if (fh !== root) await fh.close();
      return undefined;
    }
    // The root's own handle is the MachineRoot's to close; hand out a handle of our own.
    return fh === root ? openChildDir(root, '.', this.path).catch(() => undefined) : fh;
  }
}

function kindOf(st: Stats): EntryKind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

function isGone(err: unknown): boolean {
  return err instanceof HangarError ? err.code === 'file_not_found' || err.code === 'path_escapes_root' || err.code === 'not_a_directory' : errno(err) === 'ENOENT';
}
