// An overlay writable layer (upper dir) as an OCI layer tar stream: what the machine added,
// changed and deleted on top of its image. Overlay marks a deletion with a 0/0 character device
// and a directory that hides the image's with the xattr trusted.overlay.opaque=y; in a layer
// these become `.wh.NAME` and `DIR/.wh..wh..opq` (the OCI whiteouts layer-unpack.ts turns back).
//
// The walk holds every directory open and names entries relative to it, never following a link
// (see machine-fs-walk.ts): whatever the machine planted in its tree, nothing outside it is read.
// Owners are written as the machine sees them (IdShift.toGuest), hard links stay links, set-id
// bits stay. Kept xattrs: `user.*` with UTF-8 values (a tar PAX record is text); the rest
// (security.*, ACLs, which carry host ids, trusted.overlay bookkeeping) are dropped. Sockets and
// device nodes other than whiteouts cannot be carried by an image and are skipped (and reported);
// so are names that are not UTF-8.
import { constants, type Stats } from 'node:fs';
import { lstat, open, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { isUtf8 } from 'node:buffer';
import { Readable } from 'node:stream';
import { once, type EventEmitter } from 'node:events';
import tar from 'tar-stream';
import { HangarError } from '../protocol/errors.ts';
import type { IdShift } from './id-shift.ts';
import { at, DIR_FLAGS, fdPath } from './machine-fs-walk.ts';
import { readXattrs } from './xattrs.ts';

const OPAQUE = '.wh..wh..opq';
const WHITEOUT = '.wh.';
const MAX_DEPTH = 1024;

type Pack = ReturnType<typeof tar.pack>;
type EntryHeader = Parameters<Pack['entry']>[0];

export type SkippedType = 'socket' | 'character-device' | 'block-device' | 'invalid-name';
export type UpperLayerSummary = {
  /** Members written, whiteouts included. */
  entries: number;
  /** File content bytes written (before compression). */
  bytes: number;
  skipped: { path: string; type: SkippedType }[];
  /** Extended attributes left out (see the top of this file). */
  droppedXattrs: number;
};

export type PackOptions = { signal?: AbortSignal; onEntry?: (summary: UpperLayerSummary) => void };

/**
 * Starts packing `upperDir`; read `tar` to drive it (it waits for the reader). `done` settles
 * when the last member is written, or with the walk's error (which also errors `tar`).
 * The tree must not change while it is read: pass a frozen capture, mounted read-only.
 */
export function packUpperLayer(upperDir: string, ids: IdShift, opts: PackOptions = {}): { tar: Readable; done: Promise<UpperLayerSummary> } {
  const pack = tar.pack();
  const summary: UpperLayerSummary = { entries: 0, bytes: 0, skipped: [], droppedXattrs: 0 };
  // A reader that goes away (or fails) must end the walk rather than leave it waiting.
  const gone = new Promise<never>((_, reject) => {
    pack.once('close', () => reject(new Error('the layer stream was closed before the walk ended')));
  });
  gone.catch(() => undefined);
  const walker = new Walker(pack, ids, summary, gone, opts);
  const done = (async () => {
    const root = await open(upperDir, DIR_FLAGS);
    try {
      await walker.dir(root, '', 0);
    } finally {
      await root.close();
    }
    pack.finalize();
    return summary;
  })();
  done.catch((err: unknown) => pack.destroy(err as Error));
  return { tar: pack as unknown as Readable, done };
}

class Walker {
  readonly #pack: Pack;
  readonly #ids: IdShift;
  readonly #summary: UpperLayerSummary;
  readonly #gone: Promise<never>;
  readonly #opts: PackOptions;
  /** First path of each multiply-linked inode: later names become hard links to it. */
  readonly #links = new Map<number, string>();

  constructor(pack: Pack, ids: IdShift, summary: UpperLayerSummary, gone: Promise<never>, opts: PackOptions) {
    this.#pack = pack;
    this.#ids = ids;
    this.#summary = summary;
    this.#gone = gone;
    this.#opts = opts;
  }

  async dir(dir: FileHandle, rel: string, depth: number): Promise<void> {
    if (depth >= MAX_DEPTH) {
      throw new HangarError('storage_error', `the machine's files nest deeper than ${MAX_DEPTH} directories at /${rel}`, {
        hint: 'flatten or remove that tree inside the machine, then commit again',
        details: { path: `/${rel}` },
      });
    }
    const names = (await readdir(fdPath(dir), { encoding: 'buffer' })).sort(Buffer.compare);
    for (const raw of names) {
      this.#opts.signal?.throwIfAborted();
      const name = raw.toString('utf8');
      const path = rel ? `${rel}/${name}` : name;
      if (!isUtf8(raw)) {
        this.#summary.skipped.push({ path: `/${path}`, type: 'invalid-name' });
        continue;
      }
      await this.#entry(dir, name, path, depth);
    }
  }

  async #entry(dir: FileHandle, name: string, path: string, depth: number): Promise<void> {
    const target = at(dir, name);
    const st = await lstat(target);
    const xattrs = st.isCharacterDevice() ? new Map<string, Buffer>() : readXattrs(target);
    refuseUnsupportedOverlay(xattrs, path);
    if ((st.isCharacterDevice() && st.rdev === 0) || (st.isFile() && st.size === 0 && xattrs.has('trusted.overlay.whiteout'))) {
      const parent = path.slice(0, path.length - name.length);
      await this.#add({ name: `${parent}${WHITEOUT}${name}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: st.mtime, size: 0 });
      return;
    }
    const header: EntryHeader = { name: path, mode: tarMode(st.mode), uid: this.#ids.toGuest(st.uid), gid: this.#ids.toGuest(st.gid), mtime: st.mtime };
    const pax = this.#keptXattrs(xattrs);
    if (pax) header.pax = pax;

    if (st.isDirectory()) {
      await this.#add({ ...header, name: `${path}/`, type: 'directory' });
      if (xattrs.get('trusted.overlay.opaque')?.toString() === 'y') {
        await this.#add({ name: `${path}/${OPAQUE}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: st.mtime, size: 0 });
      }
      const child = await open(target, DIR_FLAGS);
      try {
        await this.dir(child, path, depth + 1);
      } finally {
        await child.close();
      }
    } else if (st.isFile()) {
      const first = st.nlink > 1 ? this.#links.get(st.ino) : undefined;
      if (first !== undefined) {
        const { pax: _same, ...link } = header; // the inode's xattrs travel with its first name
        await this.#add({ ...link, type: 'link', linkname: first, size: 0 });
        return;
      }
      if (st.nlink > 1) this.#links.set(st.ino, path);
      await this.#file(dir, name, { ...header, type: 'file', size: st.size }, st);
    } else if (st.isSymbolicLink()) {
      await this.#add({ ...header, type: 'symlink', linkname: await readlink(target) });
    } else if (st.isFIFO()) {
      await this.#add({ ...header, type: 'fifo' });
    } else {
      this.#summary.skipped.push({ path: `/${path}`, type: skippedType(st) });
    }
  }

  async #file(dir: FileHandle, name: string, header: EntryHeader, st: Stats): Promise<void> {
    const fh = await open(at(dir, name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NOCTTY);
    try {
      let sink!: ReturnType<Pack["entry"]>;
      const written = new Promise<void>((resolve, reject) => {
        sink = this.#pack.entry(header, (err) => (err ? reject(err) : resolve()));
      });
      written.catch(() => undefined);
      if (st.size > 0) {
        // Exactly the size the header announced, read in the stream's chunks, waiting for the reader.
        for await (const chunk of fh.createReadStream({ autoClose: false, start: 0, end: st.size - 1 })) {
          if (!sink.write(chunk as Buffer)) await Promise.race([once(sink as unknown as EventEmitter, 'drain'), this.#gone]);
        }
      }
      sink.end(Buffer.alloc(0));
      await Promise.race([written, this.#gone]);
    } finally {
      await fh.close();
    }
    this.#summary.bytes += st.size;
    this.#counted();
  }

  async #add(header: EntryHeader): Promise<void> {
    await Promise.race([
      // A file member (a whiteout) is given its empty content, else the pack waits for it.
      new Promise<void>((resolve, reject) => {
        const cb = (err?: Error | null) => (err ? reject(err) : resolve());
        if (header.type === 'file') this.#pack.entry(header, Buffer.alloc(0), cb);
        else this.#pack.entry(header, cb);
      }),
      this.#gone,
    ]);
    this.#counted();
  }

  #counted(): void {
    this.#summary.entries++;
    this.#opts.onEntry?.(this.#summary);
  }

  #keptXattrs(xattrs: Map<string, Buffer>): Record<string, string> | undefined {
    let pax: Record<string, string> | undefined;
    for (const [key, value] of xattrs) {
      if (key.startsWith('trusted.overlay.')) continue;
      if (key.startsWith('user.') && isUtf8(value) && !value.includes(0) && !value.includes(10)) {
        (pax ??= {})[`SCHILY.xattr.${key}`] = value.toString('utf8');
      } else {
        this.#summary.droppedXattrs++;
      }
    }
    return pax;
  }
}

/** Redirected directories and metadata-only copies keep their data in the image's layers; Hangar mounts neither. */
function refuseUnsupportedOverlay(xattrs: Map<string, Buffer>, path: string): void {
  for (const key of ['trusted.overlay.redirect', 'trusted.overlay.metacopy']) {
    if (xattrs.has(key)) {
      throw new HangarError('storage_error', `/${path} in the machine's writable layer carries ${key}, which a commit cannot turn into a layer`, {
        hint: 'the overlay was mounted with redirect_dir or metacopy by something other than Hangar; copy the path anew inside the machine, then commit again',
        details: { path: `/${path}` },
      });
    }
  }
}

/**
 * The permission bits for tar-stream, which takes a mode of 0 for "unset" and writes 0644: 0o10000
 * is truthy and masked away when the header is encoded (mode & 0o7777), so a file of mode 000 stays 000.
 */
function tarMode(mode: number): number {
  return (mode & 0o7777) || 0o10000;
}

function skippedType(st: Stats): SkippedType {
  if (st.isSocket()) return 'socket';
  if (st.isBlockDevice()) return 'block-device';
  return 'character-device';
}
