import { lstat, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { HangarError } from '../protocol/errors.ts';

// Resolves a path as seen inside a machine to a host path under its root, following symlinks
// the way the machine would (an absolute link target starts at the machine's root), so that no
// link can lead a host-side read or write outside the machine.

const MAX_LINKS = 40;

export function validateGuestPath(guestPath: string): string[] {
  if (!guestPath.startsWith('/')) {
    throw new HangarError('path_escapes_root', `path ${JSON.stringify(guestPath)} is not absolute`, {
      hint: 'give an absolute path inside the machine, such as /etc/app.conf',
      details: { path: guestPath },
    });
  }
  const parts = guestPath.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) {
    throw new HangarError('path_escapes_root', `path ${JSON.stringify(guestPath)} contains '..'`, {
      hint: "use a normalized absolute path without '..' components",
      details: { path: guestPath },
    });
  }
  if (guestPath.includes('\0')) {
    throw new HangarError('path_escapes_root', 'path contains a NUL byte', { hint: 'remove the NUL byte', details: { path: guestPath } });
  }
  return parts;
}

/**
 * The host path for `guestPath` inside `root`. Every component but the last is resolved through
 * symlinks (confined to root); the last is resolved too unless `followLast` is false.
 */
export async function resolveInRoot(root: string, guestPath: string, opts: { followLast?: boolean } = {}): Promise<string> {
  const pending = validateGuestPath(guestPath);
  const followLast = opts.followLast ?? true;
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = join(root, ...resolved, part);
    const isLast = pending.length === 0;
    let st;
    try {
      st = await lstat(candidate);
    } catch {
      resolved.push(part, ...pending.filter((p) => p !== '..'));
      break;
    }
    if (st.isSymbolicLink() && (!isLast || followLast)) {
      if (++links > MAX_LINKS) {
        throw new HangarError('path_escapes_root', `too many symbolic links resolving ${guestPath}`, {
          hint: 'the path has a symlink loop; fix the links inside the machine',
          details: { path: guestPath },
        });
      }
      const target = await readlink(candidate);
      const targetParts = target.split('/').filter((p) => p !== '' && p !== '.');
      if (posix.isAbsolute(target)) resolved.length = 0;
      pending.unshift(...targetParts);
      continue;
    }
    resolved.push(part);
  }
  return join(root, ...resolved);
}
