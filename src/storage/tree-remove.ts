import { randomBytes } from 'node:crypto';
import { open, readdir, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { at, DIR_FLAGS, errno, fdPath } from './machine-fs-walk.ts';

// Removing a directory tree the machine built, from the host: for the files API's recursive remove
// (inside a mounted, maybe running, machine) and for destroy (the machine's whole directory).

/** How many directories a tree removal holds open at most, however deep the tree. */
const MAX_HELD_DIRS = 32;

/**
 * Removes `name` in `dir` and, if it is a directory, all it holds; never follows a symlink.
 *
 * A machine can make a tree far deeper than there are descriptors (or than PATH_MAX), so this
 * walks without recursion and never builds a path: it holds at most MAX_HELD_DIRS directories
 * open, and a directory found below that depth is first renamed up into the top directory (a
 * rename within one file system, by two held descriptors), to be removed from there in its turn.
 * overlayfs refuses to rename a directory that comes from an image layer (EXDEV); such a one is
 * entered instead, so only an image's own depth can make the walk hold more.
 */
export async function removeTree(dir: FileHandle, name: string): Promise<void> {
  const top = await openForRemoval(dir, name);
  if (!top) return;
  type Frame = { fh: FileHandle; parent: FileHandle; name: string; names: string[] };
  const frames: Frame[] = [];
  try {
    frames.push({ fh: top, parent: dir, name, names: [] });
    frames[0]!.names = await readdir(fdPath(top));
    let movedUp = false;
    while (frames.length > 0) {
      const frame = frames[frames.length - 1]!;
      const child = frame.names.pop();
      if (child === undefined) {
        if (frames.length === 1 && movedUp) {
          movedUp = false;
          frame.names = await readdir(fdPath(frame.fh));
          continue;
        }
        frames.pop();
        await frame.fh.close();
        await rmdir(at(frame.parent, frame.name));
        continue;
      }
      const sub = await openForRemoval(frame.fh, child);
      if (!sub) continue;
      if (frames.length >= MAX_HELD_DIRS) {
        const moved = await rename(at(frame.fh, child), at(frames[0]!.fh, `.hangar-rm-${randomBytes(6).toString('hex')}`)).then(
          () => true,
          (err: unknown) => {
            if (errno(err) === 'EXDEV') return false;
            throw err;
          },
        );
        if (moved) {
          await sub.close();
          movedUp = true;
          continue;
        }
      }
      frames.push({ fh: sub, parent: frame.fh, name: child, names: [] });
      frames[frames.length - 1]!.names = await readdir(fdPath(sub));
    }
  } finally {
    for (const f of frames) await f.fh.close().catch(() => undefined);
  }
}

/** The directory `name` in `dir`, opened; anything else there is unlinked (a symlink, not its target). */
async function openForRemoval(dir: FileHandle, name: string): Promise<FileHandle | undefined> {
  for (;;) {
    try {
      return await open(at(dir, name), DIR_FLAGS);
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined;
      if (errno(err) !== 'ENOTDIR' && errno(err) !== 'ELOOP') throw err;
    }
    try {
      await unlink(at(dir, name));
      return undefined;
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined;
      if (errno(err) !== 'EISDIR') throw err; // it became a directory since: open it
    }
  }
}

/** Removes the host directory `path` and all it holds, however deep (see removeTree); a missing one is fine. */
export async function removeHostTree(path: string): Promise<void> {
  let parent: FileHandle;
  try {
    parent = await open(dirname(path), DIR_FLAGS);
  } catch (err) {
    if (errno(err) === 'ENOENT') return;
    throw err;
  }
  try {
    await removeTree(parent, basename(path));
  } finally {
    await parent.close();
  }
}
