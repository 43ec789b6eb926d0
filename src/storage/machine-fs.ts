import { constants, type Stats } from 'node:fs';
import { lstat, open, readdir, readlink, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { HangarError } from '../protocol/errors.ts';
import type { FileEntry, FileStat } from '../protocol/schemas.ts';
import { at, errno, fdPath, fsError, isADirectory, MachineRoot, ROOT_OWNER } from './machine-fs-walk.ts';
import { writeFileAt, type WriteOptions } from './machine-fs-write.ts';
import { removeTree } from './tree-remove.ts';

// The files API's operations on a machine's root filesystem (a mounted overlay; the machine may be
// running). Every path is resolved by MachineRoot (machine-fs-walk.ts), so nothing outside the
// machine is read or written. Contents stream both ways and are never held whole in memory.
//
// Semantics worth knowing:
// - read, write, list and tar follow a symlink in the last component (confined to the machine);
//   stat, remove and rename act on the link itself (lstat semantics).
// - write goes through machine-fs-write.ts: a temp file in the same directory, fsynced and renamed
//   over the target once complete, so a failed upload leaves nothing half-written; a device, FIFO
//   or socket at the target is refused, never opened. A new file gets mode 0644 unless `mode` is
//   given; a replaced file keeps its mode and owner unless `mode` is given. New files and
//   directories are owned by root (uid 0) unless the caller names another owner.

export type OpenedFile = { handle: FileHandle; size: number; mode: number; mtime: Date };

/** Opens a regular file for reading; the caller reads from `handle` and closes it. */
export async function openFile(rootfs: string, path: string): Promise<OpenedFile> {
  const root = await MachineRoot.open(rootfs);
  try {
    const r = await root.resolve(path, { followLast: true });
    if (r.name === '') throw isADirectory(path);
    let handle: FileHandle;
    try {
      // O_NONBLOCK: a FIFO must not hang the request (it is refused below).
      handle = await open(at(r.dir, r.name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      throw fsError(err, path);
    }
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      if (st.isDirectory()) throw isADirectory(path);
      throw new HangarError('not_a_regular_file', `${path} is not a regular file`, {
        hint: 'only regular files can be read; stat it with GET …/files/stat?path=',
        details: { path },
      });
    }
    return { handle, size: st.size, mode: st.mode & 0o7777, mtime: st.mtime };
  } finally {
    await root.close();
  }
}

/** Streams `body` into `path`, creating parent directories, and renames it into place when complete. */
export async function writeFile(
  rootfs: string,
  path: string,
  body: Readable | AsyncIterable<Uint8Array>,
  opts: WriteOptions = {},
): Promise<{ path: string; size: number; mode: number; created: boolean }> {
  const root = await MachineRoot.open(rootfs);
  try {
    const r = await root.resolve(path, { followLast: true, createParents: true, owner: opts.owner ?? ROOT_OWNER });
    if (r.name === '') throw isADirectory(path);
    const journal = { rootfs, guestDir: posix.dirname(r.guestPath) };
    return { path, ...(await writeFileAt(r.dir, r.name, path, body, { ...opts, journal })) };
  } finally {
    await root.close();
  }
}

/** The entries of a directory, sorted by name. */
export async function listDir(rootfs: string, path: string): Promise<{ path: string; entries: FileEntry[] }> {
  const root = await MachineRoot.open(rootfs);
  try {
    const dir = await root.openDir(await root.resolve(path, { followLast: true }));
    try {
      const names = (await readdir(fdPath(dir))).sort();
      const entries: FileEntry[] = [];
      for (let i = 0; i < names.length; i += 64) {
        const batch = await Promise.all(names.slice(i, i + 64).map((name) => entryAt(dir, name).catch(() => undefined)));
        for (const e of batch) if (e) entries.push(e);
      }
      return { path, entries };
    } finally {
      await dir.close();
    }
  } finally {
    await root.close();
  }
}

/** One entry, not following a symlink in the last component. */
export async function statPath(rootfs: string, path: string): Promise<FileStat> {
  const root = await MachineRoot.open(rootfs);
  try {
    const r = await root.resolve(path, { followLast: false });
    const entry = r.name === '' ? entryOf('/', await r.dir.stat()) : await entryAt(r.dir, r.name).catch((err: unknown) => {
      throw fsError(err, path);
    });
    return { path, ...entry };
  } finally {
    await root.close();
  }
}

/** Removes a file, a symlink (not what it points to), an empty directory, or with `recursive` any directory. */
export async function removePath(rootfs: string, path: string, opts: { recursive?: boolean } = {}): Promise<void> {
  const root = await MachineRoot.open(rootfs);
  try {
    const r = await root.resolve(path, { followLast: false });
    if (r.name === '') {
      throw new HangarError('bad_request', "refusing to remove the machine's root directory", {
        hint: 'remove what is inside it instead, or destroy the machine',
        details: { path },
      });
    }
    try {
      const st = await lstat(at(r.dir, r.name));
      if (!st.isDirectory()) await unlink(at(r.dir, r.name));
      else if (opts.recursive) await removeTree(r.dir, r.name);
      else await rmdir(at(r.dir, r.name));
    } catch (err) {
      throw fsError(err, path);
    }
  } finally {
    await root.close();
  }
}

/** Moves `from` to `to` (creating `to`'s parents); an existing `to` is replaced only with `overwrite`. */
export async function renamePath(rootfs: string, from: string, to: string, opts: { overwrite?: boolean } = {}): Promise<void> {
  const root = await MachineRoot.open(rootfs);
  try {
    const src = await root.resolve(from, { followLast: false });
    if (src.name === '') throw new HangarError('bad_request', "the machine's root directory cannot be moved", { hint: 'move what is inside it instead' });
    const srcStat = await lstat(at(src.dir, src.name)).catch((err: unknown) => {
      throw fsError(err, from);
    });
    const dst = await root.resolve(to, { followLast: false, createParents: true });
    if (dst.name === '') throw new HangarError('file_exists', 'the destination is the root directory', { hint: 'name a path inside a directory', details: { path: to } });
    const dstStat = await lstat(at(dst.dir, dst.name)).catch(() => undefined);
    if (dstStat && !opts.overwrite) {
      throw new HangarError('file_exists', `${to} already exists`, {
        hint: 'pass "overwrite": true to replace it, or choose another name',
        details: { path: to },
      });
    }
    if (dstStat?.isDirectory() && !srcStat.isDirectory()) throw isADirectory(to);
    // A race remains between the existence check and the rename (Node has no renameat2
    // RENAME_NOREPLACE): a file created at `to` in between by the running machine is replaced.
    try {
      await rename(at(src.dir, src.name), at(dst.dir, dst.name));
    } catch (err) {
      if (errno(err) === 'EINVAL') {
        throw new HangarError('bad_request', `cannot move ${from} into itself (${to})`, { hint: 'choose a destination outside the directory' });
      }
      throw fsError(err, errno(err) === 'ENOTEMPTY' || errno(err) === 'EEXIST' ? to : from);
    }
  } finally {
    await root.close();
  }
}

async function entryAt(dir: FileHandle, name: string): Promise<FileEntry> {
  const st = await lstat(at(dir, name));
  return entryOf(name, st, st.isSymbolicLink() ? await readlink(at(dir, name)) : undefined);
}

function entryOf(name: string, st: Stats, linkTarget?: string): FileEntry {
  const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
  return {
    name,
    type,
    size: st.size,
    mode: st.mode & 0o7777,
    mtime: st.mtime.toISOString(),
    ...(linkTarget !== undefined ? { link_target: linkTarget } : {}),
  };
}
