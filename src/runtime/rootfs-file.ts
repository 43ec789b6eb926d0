// Reads a small file inside a machine's root filesystem as the machine would see it: symlinks
// resolve against the rootfs, never the host. The rootfs is robot-controlled, so its /etc/passwd
// may be a link to a host file, a FIFO, or huge.
import { constants } from 'node:fs';
import { lstat, open, readlink, realpath } from 'node:fs/promises';
import { HangarError } from '../protocol/errors.ts';

const MAX_LINKS = 40;
const MAX_BYTES = 4 * 1024 * 1024;

function escapes(path: string): HangarError {
  return new HangarError('path_escapes_root', `${path} resolves outside the machine's root filesystem`, {
    hint: 'replace the symlink in the image with a regular file, or give the user as numeric uid:gid',
    details: { path },
  });
}

/** Host path of `path` (absolute inside the rootfs) with every symlink resolved as if chrooted. */
async function resolveInRoot(root: string, path: string): Promise<string | undefined> {
  const pending = path.split('/');
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      resolved.pop(); // `..` at the root stays at the root, as it does in a chroot
      continue;
    }
    const host = `${root}/${[...resolved, part].join('/')}`;
    let stat;
    try {
      stat = await lstat(host);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
      throw err;
    }
    if (!stat.isSymbolicLink()) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_LINKS) throw escapes(path);
    const target = await readlink(host);
    if (target.startsWith('/')) resolved.length = 0;
    pending.unshift(...target.split('/'));
  }
  return `${root}/${resolved.join('/')}`;
}

/** Contents of the regular file at `path` inside `rootfs`, or undefined if there is none. */
export async function readRootfsFile(rootfs: string, path: string): Promise<string | undefined> {
  const root = await realpath(rootfs);
  const host = await resolveInRoot(root, path);
  if (host === undefined) return undefined;
  let file;
  try {
    // O_NOFOLLOW and O_NONBLOCK: a link swapped in since we resolved, or a FIFO, must not be followed or block us.
    file = await open(host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw escapes(path);
    throw err;
  }
  try {
    // A directory on the path may have been swapped for a link since we resolved; check where we landed.
    const opened = await readlink(`/proc/self/fd/${file.fd}`);
    if (!opened.startsWith(`${root}/`)) throw escapes(path);
    const stat = await file.stat();
    if (!stat.isFile() || stat.size > MAX_BYTES) {
      throw new HangarError('unsupported_image', `${path} in the machine's root filesystem is not a regular file under 4 MiB`, {
        hint: 'make it a regular file in the image, or give the user as numeric uid:gid',
        details: { path },
      });
    }
    return await file.readFile('utf8');
  } finally {
    await file.close();
  }
}
