// What changed between two views of one machine's filesystem (a checkpoint's and the live one, or
// two checkpoints'). Both views stack a writable layer on the same image layers, so only the paths
// in either writable layer can differ: the walk follows those and compares what each merged view
// shows there. Every lookup is descriptor-relative and never follows a link, whatever the machine
// put in its tree; the walk is bounded in depth and in the number of changes it reports.
import { constants, type Stats } from 'node:fs';
import { lstat, open, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { createTwoFilesPatch } from 'diff';
import { at, DIR_FLAGS, errno } from './machine-fs-walk.ts';

export type ChangeKind = 'added' | 'modified' | 'deleted';
export type EntryType = 'file' | 'directory' | 'symlink' | 'other';

export type Change = {
  path: string;
  change: ChangeKind;
  type: EntryType;
  /** Bytes of a file (as it is now; as it was for a deletion); absent for directories. */
  size?: number;
  previous_size?: number;
  /** A unified diff, for small text files when asked for. */
  diff?: string;
};

export type DiffView = {
  /** The merged filesystem as the machine sees it. */
  root: string;
  /** Its writable layer. */
  upper: string;
};

export type DiffOptions = { limit: number; content: boolean };

export type DiffResult = { changes: Change[]; truncated: boolean };

const MAX_DEPTH = 256;
const CONTENT_MAX_BYTES = 64 * 1024;

type Side = { view?: FileHandle; upper?: FileHandle };

export async function diffViews(before: DiffView, after: DiffView, opts: DiffOptions): Promise<DiffResult> {
  const result: DiffResult = { changes: [], truncated: false };
  const a: Side = { view: await open(before.root, DIR_FLAGS), upper: await open(before.upper, DIR_FLAGS) };
  const b: Side = { view: await open(after.root, DIR_FLAGS), upper: await open(after.upper, DIR_FLAGS) };
  try {
    await walk('', a, b, 0, result, opts);
  } finally {
    await Promise.all([a.view, a.upper, b.view, b.upper].map((fh) => fh?.close()));
  }
  return result;
}

async function walk(dir: string, a: Side, b: Side, depth: number, result: DiffResult, opts: DiffOptions): Promise<void> {
  const names = new Set([...(await layerNames(a.upper)), ...(await layerNames(b.upper))]);
  for (const name of [...names].sort()) {
    if (result.changes.length >= opts.limit || depth >= MAX_DEPTH) {
      result.truncated = true;
      return;
    }
    const path = `${dir}/${name}`;
    const [was, is] = await Promise.all([statAt(a.view, name), statAt(b.view, name)]);
    const change = await compare(path, name, was, is, a, b, opts);
    if (change) result.changes.push(change);
    // Below a directory that is in both views, or new, the layers may hold more changes.
    if (is?.isDirectory() && (!was || was.isDirectory())) {
      const child = await Promise.all([openDir(a.view, name, was), openDir(a.upper, name), openDir(b.view, name, is), openDir(b.upper, name)]);
      try {
        await walk(path, { view: child[0], upper: child[1] }, { view: child[2], upper: child[3] }, depth + 1, result, opts);
      } finally {
        await Promise.all(child.map((fh) => fh?.close()));
      }
    }
  }
}

async function compare(path: string, name: string, was: Stats | undefined, is: Stats | undefined, a: Side, b: Side, opts: DiffOptions): Promise<Change | undefined> {
  if (!was && !is) return undefined;
  if (!was) return { path, change: 'added', ...describe(is!) };
  if (!is) return { path, change: 'deleted', ...describe(was) };
  if (typeOf(was) !== typeOf(is)) return { path, change: 'modified', ...describe(is), ...(was.isFile() ? { previous_size: was.size } : {}) };
  if (is.isDirectory()) return undefined;
  if (is.isSymbolicLink()) {
    const [from, to] = await Promise.all([readlink(at(a.view!, name)), readlink(at(b.view!, name))]);
    return from === to ? undefined : { path, change: 'modified', type: 'symlink' };
  }
  const same = was.size === is.size && was.mtimeMs === is.mtimeMs && was.mode === is.mode && was.uid === is.uid && was.gid === is.gid;
  if (same) return undefined;
  const change: Change = { path, change: 'modified', ...describe(is), previous_size: was.size };
  if (opts.content && is.isFile()) {
    const patch = await textDiff(path, at(a.view!, name), at(b.view!, name), was.size, is.size);
    if (patch) change.diff = patch;
  }
  return change;
}

async function textDiff(path: string, before: string, after: string, beforeSize: number, afterSize: number): Promise<string | undefined> {
  if (beforeSize > CONTENT_MAX_BYTES || afterSize > CONTENT_MAX_BYTES) return undefined;
  const [from, to] = await Promise.all([readNoFollow(before), readNoFollow(after)]);
  if (from === undefined || to === undefined || from.includes(0) || to.includes(0)) return undefined;
  return createTwoFilesPatch(`a${path}`, `b${path}`, from.toString('utf8'), to.toString('utf8'), undefined, undefined, { context: 3 });
}

async function readNoFollow(path: string): Promise<Buffer | undefined> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    return (await fh.readFile()).subarray(0, CONTENT_MAX_BYTES);
  } catch {
    return undefined;
  } finally {
    await fh?.close();
  }
}

function describe(s: Stats): { type: EntryType; size?: number } {
  const type = typeOf(s);
  return type === 'file' ? { type, size: s.size } : { type };
}

function typeOf(s: Stats): EntryType {
  if (s.isFile()) return 'file';
  if (s.isDirectory()) return 'directory';
  if (s.isSymbolicLink()) return 'symlink';
  return 'other';
}

/** Names in a writable layer's directory; none where the layer has no such directory. */
async function layerNames(dir: FileHandle | undefined): Promise<string[]> {
  if (!dir) return [];
  try {
    return await readdir(`/proc/self/fd/${dir.fd}`);
  } catch (err) {
    if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return [];
    throw err;
  }
}

async function statAt(dir: FileHandle | undefined, name: string): Promise<Stats | undefined> {
  if (!dir) return undefined;
  try {
    return await lstat(at(dir, name));
  } catch (err) {
    if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** The child directory, never through a link; undefined where there is none. */
async function openDir(dir: FileHandle | undefined, name: string, known?: Stats): Promise<FileHandle | undefined> {
  if (!dir || (known && !known.isDirectory())) return undefined;
  try {
    return await open(at(dir, name), DIR_FLAGS);
  } catch (err) {
    if (['ENOENT', 'ENOTDIR', 'ELOOP'].includes(errno(err) ?? '')) return undefined;
    throw err;
  }
}
