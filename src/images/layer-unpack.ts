import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, open, rename, rm, symlink } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import tar from 'tar-stream';
import { HangarError, isHangarError } from '../protocol/errors.ts';
import { applySpecials, type SpecialEntry } from './layer-specials.ts';

// Unpacks one layer blob (tar, tar+gzip or tar+zstd) into a directory that overlayfs can use as a
// lowerdir. OCI whiteouts become overlay whiteouts: `.wh.NAME` a 0:0 character device, `.wh..wh..opq`
// the `trusted.overlay.opaque=y` xattr. A layer is untrusted input: no member may land outside the
// directory, neither by `..`, nor by a hard link to a path the layer does not contain, nor by writing
// through a symlink the layer itself planted. Work happens in a temp dir renamed into place on
// success, so a layer dir either is complete or does not exist.

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

type DirMeta = { mode: number; uid: number; gid: number; mtime: Date };

function unsafe(member: string, why: string, digest: string): HangarError {
  return new HangarError('unsafe_layer', `layer ${digest} is unsafe: member "${member}" ${why}`, {
    hint: 'the image was built with a malicious or broken tool; rebuild it, or do not use it',
    details: { member, layer: digest },
  });
}

/** Member name → path relative to the layer root ('' is the root); undefined when it has `..`. */
export function cleanMemberPath(name: string): string | undefined {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..') || name.includes('\0')) return undefined;
  return parts.join('/');
}

function sniffDecompressor(first: Buffer): Transform | undefined {
  if (first[0] === 0x1f && first[1] === 0x8b) return createGunzip();
  if (first.readUInt32LE(0) === 0xfd2fb528) return createZstdDecompress();
  return undefined;
}

async function openDecompressed(blobPath: string): Promise<Readable> {
  const fh = await open(blobPath, 'r');
  const head = Buffer.alloc(4);
  await fh.read(head, 0, 4, 0);
  await fh.close();
  const raw = createReadStream(blobPath);
  const dec = sniffDecompressor(head);
  return dec ? raw.pipe(dec).on('error', () => {}) : raw;
}

export async function unpackLayer(options: {
  blobPath: string;
  digest: string;
  /** Final directory; must not exist yet. Its parent is used for the temp dir. */
  target: string;
  signal?: AbortSignal;
}): Promise<void> {
  const { digest, target, signal } = options;
  const tmp = join(dirname(target), `.tmp-${randomBytes(6).toString('hex')}`);
  const side = `${tmp}.side`;
  await mkdir(tmp, { mode: 0o755 });
  try {
    await extractInto(tmp, side, options.blobPath, digest, signal);
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    if (isHangarError(err) || signal?.aborted) throw err;
    throw new HangarError('unsupported_image', `layer ${digest} could not be unpacked: ${(err as Error).message}`, {
      hint: 'layers must be tar archives, optionally gzip or zstd compressed; rebuild or re-push the image',
      details: { layer: digest },
      cause: err,
    });
  } finally {
    await rm(side, { recursive: true, force: true });
  }
}

async function extractInto(root: string, side: string, blobPath: string, digest: string, signal?: AbortSignal): Promise<void> {
  /** Relative paths known to be real directories created by this unpack. */
  const realDirs = new Set<string>(['']);
  const dirMeta = new Map<string, DirMeta>();
  const specials = new Map<string, SpecialEntry>();
  const abs = (rel: string) => join(root, rel);
  // Ownership, mode and times of directories are filled in after the batch (see the end).
  const dirSpecial = (rel: string, xattrs: Record<string, string>): SpecialEntry => ({
    path: rel || '.', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: new Date(0), xattrs,
  });

  // Every ancestor must be a directory this layer made, never a symlink: that is what stops a
  // layer from planting `a -> /etc` and then writing `a/passwd`.
  const ensureParent = async (rel: string, member: string) => {
    const parts = rel.split('/').slice(0, -1);
    let cur = '';
    for (const part of parts) {
      cur = cur ? `${cur}/${part}` : part;
      if (realDirs.has(cur)) continue;
      const st = await lstat(abs(cur)).catch(() => undefined);
      if (!st) {
        await mkdir(abs(cur), { mode: 0o755 });
      } else if (st.isSymbolicLink()) {
        throw unsafe(member, `is written through the symlink "${cur}"`, digest);
      } else if (!st.isDirectory() || specials.has(cur)) {
        throw unsafe(member, `has the non-directory "${cur}" as a parent`, digest);
      }
      realDirs.add(cur);
    }
  };

  // A later member replaces an earlier one of the same name, as tar itself does.
  const clearPath = async (rel: string, keepDir: boolean) => {
    specials.delete(rel);
    const st = await lstat(abs(rel)).catch(() => undefined);
    if (!st || (keepDir && st.isDirectory())) return;
    await rm(abs(rel), { recursive: true, force: true });
    for (const d of realDirs) if (d === rel || d.startsWith(`${rel}/`)) realDirs.delete(d);
    for (const d of dirMeta.keys()) if (d === rel || d.startsWith(`${rel}/`)) dirMeta.delete(d);
  };

  const extract = tar.extract();
  const source = await openDecompressed(blobPath);
  const feeding = pipeline(source, extract, { signal }).catch((err: unknown) => {
    extract.destroy(err as Error);
  });

  for await (const entry of extract) {
    const h = entry.header;
    const member = h.name;
    const rel = cleanMemberPath(member);
    if (rel === undefined) throw unsafe(member, 'contains a ".." path component', digest);
    const mode = (h.mode ?? 0o644) & 0o7777;
    const uid = h.uid ?? 0;
    const gid = h.gid ?? 0;
    const mtime = h.mtime ?? new Date(0);
    const pax = (h as { pax?: Record<string, string> }).pax ?? {};
    const xattrs: Record<string, string> = {};
    for (const [k, v] of Object.entries(pax)) if (k.startsWith('SCHILY.xattr.')) xattrs[k.slice(13)] = v;
    const base = posix.basename(rel);

    if (rel === '') {
      if (h.type === 'directory') dirMeta.set('', { mode, uid, gid, mtime });
      entry.resume();
      continue;
    }
    await ensureParent(rel, member);
    const parent = posix.dirname(rel) === '.' ? '' : posix.dirname(rel);

    if (base.startsWith(WHITEOUT)) {
      entry.resume();
      if (base === OPAQUE) {
        const prev = specials.get(parent)?.xattrs ?? {};
        specials.set(parent, dirSpecial(parent, { ...prev, 'trusted.overlay.opaque': 'y' }));
      } else if (!base.startsWith(`${WHITEOUT}${WHITEOUT}`)) {
        // Other `.wh..wh.*` names are aufs bookkeeping with no meaning for overlayfs.
        const target = parent ? `${parent}/${base.slice(WHITEOUT.length)}` : base.slice(WHITEOUT.length);
        await clearPath(target, false);
        specials.set(target, { path: target, type: 'character-device', mode: 0, uid: 0, gid: 0, mtime, xattrs: {}, devmajor: 0, devminor: 0 });
      }
      continue;
    }

    switch (h.type) {
      case 'directory': {
        await clearPath(rel, true);
        await mkdir(abs(rel), { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
        });
        realDirs.add(rel);
        dirMeta.set(rel, { mode, uid, gid, mtime });
        if (Object.keys(xattrs).length > 0) {
          const prev = specials.get(rel)?.xattrs ?? {};
          specials.set(rel, dirSpecial(rel, { ...prev, ...xattrs }));
        }
        entry.resume();
        break;
      }
      case 'file':
      case 'contiguous-file': {
        await clearPath(rel, false);
        if (Object.keys(xattrs).length > 0) {
          // Deferred to the tar batch (see layer-specials.ts); the content waits in a side file.
          await mkdir(side, { recursive: true });
          const staged = join(side, String(specials.size));
          await pipeline(entry, createWriteStream(staged));
          specials.set(rel, { path: rel, type: 'file', mode, uid, gid, mtime, xattrs, contentFile: staged, size: h.size ?? 0 });
          break;
        }
        const fh = await open(abs(rel), 'wx', 0o600);
        try {
          for await (const chunk of entry) await fh.write(chunk as Buffer);
          await fh.chown(uid, gid);
          // chown clears set-id bits, so the mode goes on after it.
          await fh.chmod(mode);
          await fh.utimes(mtime, mtime);
        } finally {
          await fh.close();
        }
        break;
      }
      case 'symlink': {
        await clearPath(rel, false);
        entry.resume();
        if (Object.keys(xattrs).length > 0) {
          specials.set(rel, { path: rel, type: 'symlink', mode, uid, gid, mtime, xattrs, linkname: h.linkname ?? '' });
          break;
        }
        await symlink(h.linkname ?? '', abs(rel));
        await lchown(abs(rel), uid, gid);
        await lutimes(abs(rel), mtime, mtime);
        break;
      }
      case 'link': {
        entry.resume();
        const target = cleanMemberPath(h.linkname ?? '');
        if (target === undefined || target === '') throw unsafe(member, `is a hard link to "${h.linkname}", outside the layer`, digest);
        await ensureParent(target, member);
        const deferred = specials.get(target);
        if (deferred) {
          specials.set(rel, { ...deferred, path: rel, type: 'link', linkname: target, contentFile: undefined, xattrs: {} });
          break;
        }
        const st = await lstat(abs(target)).catch(() => undefined);
        if (!st || st.isDirectory()) {
          throw unsafe(member, `is a hard link to "${h.linkname}", which is not a file in this layer`, digest);
        }
        await clearPath(rel, false);
        await link(abs(target), abs(rel));
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        entry.resume();
        await clearPath(rel, false);
        specials.set(rel, { path: rel, type: h.type, mode, uid, gid, mtime, xattrs, devmajor: h.devmajor ?? 0, devminor: h.devminor ?? 0 });
        break;
      }
      default:
        entry.resume();
        throw new HangarError('unsupported_image', `layer ${digest} has member "${member}" of unsupported tar type ${h.type ?? 'unknown'}`, {
          hint: 'rebuild the image with a standard tar writer (no sparse files)',
          details: { member, layer: digest },
        });
    }
  }
  await feeding;
  if (signal?.aborted) throw signal.reason;

  // Re-check: a later member may have replaced a checked ancestor with a symlink.
  for (const s of specials.values()) {
    if (s.path !== '.') await ensureParent(s.path, s.path);
    if (s.type === 'directory') Object.assign(s, dirMeta.get(s.path === '.' ? '' : s.path) ?? {});
  }
  await applySpecials(root, [...specials.values()], signal);

  // Directory times last, after every child (and every whiteout) has been created inside them.
  if (!dirMeta.has('')) dirMeta.set('', { mode: 0o755, uid: 0, gid: 0, mtime: new Date(0) });
  for (const [rel, meta] of dirMeta) {
    await lchown(abs(rel), meta.uid, meta.gid);
    await chmod(abs(rel), meta.mode);
    await lutimes(abs(rel), meta.mtime, meta.mtime);
  }
}
