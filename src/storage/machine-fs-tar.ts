import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lchown, link, lstat, lutimes, mkdir, open, readdir, rename, rmdir, symlink, unlink, type FileHandle } from 'node:fs/promises';
import { PassThrough, type Readable } from 'node:stream';
import tar from 'tar-stream';
import { cleanMemberPath } from '../images/layer-unpack.ts';
import { HangarError } from '../protocol/errors.ts';
import { IdShift } from './id-shift.ts';
import { at, errno, fdPath, fsError, MachineRoot, openChildDir, type Owner } from './machine-fs-walk.ts';
import { writeAll } from './machine-fs-write.ts';
import { removeTree } from './tree-remove.ts';

// A directory of a machine as a tar stream, both ways.
//
// Download: GNU tar archives the directory, started in it through the descriptor we resolved and
// hold (`--directory=/proc/self/fd/3`), so it begins inside the machine; it never follows symlinks
// while archiving (they go in as links).
//
// Upload: the archive is untrusted. It is unpacked member by member (tar-stream, in Node) into a
// fresh staging directory inside the destination, with every parent opened without following
// links: a member with `..`, an absolute name, a hard link to outside the archive, or one written
// through a symlink an earlier member planted, fails the whole upload (path_escapes_root) and the
// staging directory is removed, so a refused archive writes nothing. A complete archive is then
// merged into the destination by renames (same file system): new names move in whole, directories
// present on both sides are merged, anything else is replaced. A symlink already in the machine
// is replaced, never followed. Owners (numeric) and modes come from the archive; devices and FIFOs
// are refused. The staging directory is visible to a running machine while the upload lasts.

const STAGE_PREFIX = '.hangar-tar-';

/**
 * The directory at `path` as a tar stream; it errors (the response is cut) if tar fails midway.
 * Owners are given as the machine sees them (see IdShift).
 */
export async function tarDirectory(rootfs: string, path: string, opts: { signal?: AbortSignal; ids?: IdShift } = {}): Promise<Readable> {
  const { signal } = opts;
  const root = await MachineRoot.open(rootfs);
  let dir: FileHandle;
  try {
    dir = await root.openDir(await root.resolve(path, { followLast: true }));
  } finally {
    await root.close();
  }
  const child = spawn('tar', ['--create', '--file=-', '--directory=/proc/self/fd/3', '--numeric-owner', '.'], {
    stdio: ['ignore', 'pipe', 'pipe', dir.fd],
    signal,
  });
  // Wire the output up before any await: Node discards the output of a child that exits while
  // nothing reads it yet, and a small directory's tar is done at once.
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  const failed = () =>
    new HangarError('internal', `tar failed archiving ${path}: ${stderr.trim() || 'killed'}`, { hint: 'retry; if it persists, check the daemon log', details: { path } });
  const out = new PassThrough();
  out.on('error', () => {}); // whoever reads `out` sees the error; an unread one must not crash the daemon
  child.stdout!.pipe(out, { end: false });
  let spawnError: unknown;
  const closed = new Promise<void>((resolve) => {
    // Exit status 1 means a file changed while it was read (a running machine); the archive is whole.
    child.once('close', (code) => {
      if (code === 0 || code === 1) out.end();
      else out.destroy(failed());
      resolve();
    });
    child.once('error', (err) => {
      spawnError = err;
      out.destroy(err);
      resolve();
    });
  });
  // Wait for the first bytes (or the end), so that a tar that fails at once is a proper error answer.
  const firstBytes = new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  try {
    await Promise.race([firstBytes, closed]);
  } finally {
    await dir.close();
  }
  if (errno(spawnError) === 'ENOENT') throw new HangarError('host_unsupported', 'GNU tar was not found on the host', { hint: 'install the Debian package "tar"' });
  if (spawnError) throw spawnError;
  if (child.exitCode !== null && child.exitCode > 1) throw failed();
  return opts.ids?.shifted ? shiftOwners(out, opts.ids) : out;
}

/** Rewrites each member's owner from host ids to the machine's; contents pass through as they stream. */
function shiftOwners(archive: Readable, ids: IdShift): Readable {
  const extract = tar.extract();
  const pack = tar.pack();
  extract.on('entry', (header, stream, next) => {
    const entry = pack.entry({ ...header, uid: ids.toGuest(header.uid ?? 0), gid: ids.toGuest(header.gid ?? 0) }, (err) => (err ? pack.destroy(err) : next()));
    stream.pipe(entry);
  });
  extract.on('finish', () => pack.finalize());
  extract.on('error', (err) => pack.destroy(err));
  archive.on('error', (err) => extract.destroy(err));
  archive.pipe(extract);
  const out = new PassThrough();
  pack.on('error', (err) => out.destroy(err));
  return pack.pipe(out);
}

type Meta = { mode: number; uid: number; gid: number; mtime: Date };

/**
 * Unpacks the tar stream `body` into the directory `path` (created if missing). Owners in the
 * archive are ids as the machine sees them (see IdShift).
 */
export async function untarInto(
  rootfs: string,
  path: string,
  body: Readable,
  opts: { signal?: AbortSignal; ids?: IdShift } = {},
): Promise<{ path: string; members: number }> {
  const root = await MachineRoot.open(rootfs);
  const stageName = STAGE_PREFIX + randomBytes(6).toString('hex');
  const ids = opts.ids ?? new IdShift(0);
  let dest: FileHandle | undefined;
  let stage: FileHandle | undefined;
  try {
    const r = await root.resolve(path, { followLast: true, createParents: true, owner: ids.root });
    if (r.name !== '') {
      const made = await mkdir(at(r.dir, r.name), { mode: 0o755 }).then(() => true, (err: unknown) => {
        if (errno(err) !== 'EEXIST') throw fsError(err, path);
        return false;
      });
      if (made) await lchown(at(r.dir, r.name), ids.root.uid, ids.root.gid);
    }
    dest = await root.openDir(r);
    await mkdir(at(dest, stageName), { mode: 0o700 });
    stage = await openChildDir(dest, stageName, path);
    const members = await extract(stage, body, ids, opts.signal);
    await merge(stage, dest, '');
    return { path, members };
  } finally {
    await stage?.close();
    if (dest) await removeTree(dest, stageName).catch(() => undefined);
    await dest?.close();
    await root.close();
  }
}

async function extract(stage: FileHandle, body: Readable, ids: IdShift, signal?: AbortSignal): Promise<number> {
  const dirMeta = new Map<string, Meta>();
  const extractor = tar.extract();
  const onAbort = () => extractor.destroy(signal?.reason as Error);
  signal?.addEventListener('abort', onAbort, { once: true });
  body.on('error', (err) => extractor.destroy(err));
  body.pipe(extractor);
  let members = 0;
  let current = 'the archive';
  try {
    for await (const entry of extractor) {
      const h = entry.header;
      const member = h.name;
      current = member;
      const rel = cleanMemberPath(member);
      if (member.startsWith('/') || rel === undefined) {
        throw escapes(member, member.startsWith('/') ? 'has an absolute name' : "contains a '..' component");
      }
      if (rel === '') {
        entry.resume(); // the archive's own root: the destination keeps its mode and owner
        continue;
      }
      members++;
      const meta: Meta = { mode: (h.mode ?? 0o644) & 0o7777, uid: ids.toHost(h.uid ?? 0), gid: ids.toHost(h.gid ?? 0), mtime: h.mtime ?? new Date() };
      const slash = rel.lastIndexOf('/');
      const base = rel.slice(slash + 1);
      const parent = await stagedDir(stage, slash < 0 ? [] : rel.slice(0, slash).split('/'), member, ids.root);
      try {
        const target = at(parent, base);
        switch (h.type) {
          case 'directory': {
            const st = await lstat(target).catch(() => undefined);
            if (st && !st.isDirectory()) await unlink(target);
            if (!st?.isDirectory()) await mkdir(target, { mode: 0o700 });
            dirMeta.set(rel, meta);
            entry.resume();
            break;
          }
          case 'file':
          case 'contiguous-file': {
            await removeTree(parent, base);
            const fh = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
            try {
              for await (const chunk of entry) await writeAll(fh, chunk as Buffer);
              await fh.chown(meta.uid, meta.gid);
              await fh.chmod(meta.mode); // after chown, which clears set-id bits
              await fh.utimes(meta.mtime, meta.mtime);
            } finally {
              await fh.close();
            }
            break;
          }
          case 'symlink': {
            entry.resume();
            await removeTree(parent, base);
            await symlink(h.linkname ?? '', target);
            await lchown(target, meta.uid, meta.gid);
            await lutimes(target, meta.mtime, meta.mtime);
            break;
          }
          case 'link': {
            entry.resume();
            const linked = cleanMemberPath(h.linkname ?? '');
            if (!linked || (h.linkname ?? '').startsWith('/')) throw escapes(member, `is a hard link to "${h.linkname}", outside the archive`);
            const ls = linked.lastIndexOf('/');
            const from = await stagedDir(stage, ls < 0 ? [] : linked.slice(0, ls).split('/'), member);
            try {
              const st = await lstat(at(from, linked.slice(ls + 1))).catch(() => undefined);
              if (!st || st.isDirectory()) {
                throw new HangarError('bad_request', `archive member "${member}" is a hard link to "${h.linkname}", which is not a file earlier in the archive`, {
                  hint: 'fix the archive; hard links must point to files stored before them',
                  details: { member },
                });
              }
              await removeTree(parent, base);
              await link(at(from, linked.slice(ls + 1)), target);
            } finally {
              if (from !== stage) await from.close();
            }
            break;
          }
          default:
            entry.resume();
            throw new HangarError('bad_request', `archive member "${member}" is a ${h.type ?? 'member of unknown type'}; the files API unpacks only files, directories and links`, {
              hint: 'leave devices, FIFOs and sockets out of the archive (tar --exclude)',
              details: { member, type: h.type },
            });
        }
      } finally {
        if (parent !== stage) await parent.close();
      }
    }
  } catch (err) {
    // Leave the request readable to its end so the error can still be answered on it.
    body.unpipe(extractor);
    body.resume();
    if (signal?.aborted || err instanceof HangarError) throw err;
    if (errno(err)) throw fsError(err, `archive member "${current}"`);
    throw new HangarError('bad_request', `the body is not a valid tar archive: ${(err as Error).message}`, {
      hint: 'send a tar stream (not compressed) with Content-Type: application/x-tar',
    });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  // Directory modes, owners and times last: a read-only directory must not stop its children.
  for (const [rel, meta] of dirMeta) {
    const fh = await stagedDir(stage, rel.split('/'), rel).catch(() => undefined);
    if (!fh) continue; // replaced by a later member
    try {
      await fh.chown(meta.uid, meta.gid);
      await fh.chmod(meta.mode);
      await fh.utimes(meta.mtime, meta.mtime);
    } finally {
      await fh.close();
    }
  }
  return members;
}

/** Opens the staged directory at `parts`, making missing ones owned by `create`; a symlink on the way is refused. */
async function stagedDir(stage: FileHandle, parts: string[], member: string, create?: Owner): Promise<FileHandle> {
  let dir = stage;
  try {
    for (let i = 0; i < parts.length; i++) {
      const name = parts[i]!;
      let next: FileHandle | undefined;
      try {
        next = await open(at(dir, name), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      } catch (err) {
        const st = await lstat(at(dir, name)).catch(() => undefined);
        if (st?.isSymbolicLink()) throw escapes(member, `is written through the symlink "${parts.slice(0, i + 1).join('/')}" an earlier member made`);
        if (st || !create || errno(err) !== 'ENOENT') {
          throw new HangarError('bad_request', `archive member "${member}" needs "${parts.slice(0, i + 1).join('/')}", which is ${st ? 'not a directory' : 'not in the archive'}`, {
            hint: 'fix the archive',
            details: { member },
          });
        }
        await mkdir(at(dir, name), { mode: 0o755 });
        next = await open(at(dir, name), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
        await next.chown(create.uid, create.gid);
      }
      if (dir !== stage) await dir.close();
      dir = next;
    }
    return dir;
  } catch (err) {
    if (dir !== stage) await dir.close();
    throw err;
  }
}

/** Moves everything in `from` into `into` (see the top of this file); `rel` names it for errors. */
async function merge(from: FileHandle, into: FileHandle, rel: string): Promise<void> {
  for (const name of await readdir(fdPath(from))) {
    const memberPath = rel ? `${rel}/${name}` : name;
    const src = await lstat(at(from, name));
    const dst = await lstat(at(into, name)).catch(() => undefined);
    if (src.isDirectory() && dst?.isDirectory()) {
      const a = await openChildDir(from, name, memberPath);
      try {
        const b = await openChildDir(into, name, memberPath);
        try {
          await merge(a, b, memberPath);
          await b.chown(src.uid, src.gid);
          await b.chmod(src.mode & 0o7777);
          await b.utimes(src.atime, src.mtime);
        } finally {
          await b.close();
        }
      } finally {
        await a.close();
      }
      continue;
    }
    try {
      if (dst?.isDirectory()) await rmdir(at(into, name));
      else if (dst && src.isDirectory()) await unlink(at(into, name));
      await rename(at(from, name), at(into, name));
    } catch (err) {
      if (errno(err) === 'ENOTEMPTY' || errno(err) === 'EEXIST') {
        throw new HangarError('directory_not_empty', `archive member "${memberPath}" would replace a non-empty directory`, {
          hint: 'remove the directory first (DELETE …/files?recursive=true), or leave it out of the archive',
          details: { member: memberPath },
        });
      }
      throw fsError(err, memberPath);
    }
  }
}

function escapes(member: string, why: string): HangarError {
  return new HangarError('path_escapes_root', `archive member "${member}" ${why}`, {
    hint: 'archive members must be relative paths inside the destination, without ".." and not written through symlinks',
    details: { member },
  });
}
