import { constants } from 'node:fs';
import { lstat, mkdir, open, readlink, type FileHandle } from 'node:fs/promises';
import { HangarError } from '../protocol/errors.ts';
import { validateGuestPath } from './rootfs-path.ts';

// Walks a machine's root filesystem from the host without ever leaving it, even while a process
// inside the (running) machine rearranges its files.
//
// Every directory is held open as a file descriptor and every call names its target relative to
// one: `/proc/self/fd/N/name` makes the kernel start at the directory the descriptor holds (as
// openat(N, name) would), so no path is ever looked up twice and a component swapped for a symlink
// after we checked it cannot redirect us. Directories are opened with O_NOFOLLOW, so a symlink on
// the way is always seen and handled here: a relative link is followed inside the root, an
// absolute one or one that climbs above the root is refused (path_escapes_root) — or, with
// `chroot`, resolved as the machine itself would (from its root, `..` stopping there).
//
// A short story of its use:
//   const root = await MachineRoot.open('/var/lib/hangar/machines/<id>/rootfs');
//   try {
//     const { dir, name } = await root.resolve('/etc/app.conf', { followLast: true });
//     const fh = await open(at(dir, name), O_RDONLY | O_NOFOLLOW);   // inside the root, whatever happens
//   } finally {
//     await root.close();                                              // closes every directory it opened
//   }

export const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const MAX_LINKS = 40;
/** Directories a resolve holds open at most; a machine's links can name paths of ~80,000 components. */
const MAX_HELD_DIRS = 64;

/** Host ids for what the daemon creates in a machine (root today; a shifted range with user namespaces). */
export type Owner = { uid: number; gid: number };
export const ROOT_OWNER: Owner = { uid: 0, gid: 0 };

export type ResolveOptions = {
  /** Follow a symlink in the last component too (else it is left as it is: lstat semantics). */
  followLast: boolean;
  /** Make missing directories on the way (mode 0755, owned by `owner` when given). */
  createParents?: boolean;
  owner?: Owner;
  /** Resolve absolute links from the machine's root, and `..` at the root to the root, as the machine does. */
  chroot?: boolean;
};

/** `name` inside the directory `dir` holds open (an *at()-style path). */
export function at(dir: FileHandle, name: string): string {
  return `/proc/self/fd/${dir.fd}/${name}`;
}

/** The directory `dir` holds open, as a path (for readdir). */
export function fdPath(dir: FileHandle): string {
  return `/proc/self/fd/${dir.fd}`;
}

export type Resolved = {
  /** The directory the last component lives in, held open until the MachineRoot closes. */
  dir: FileHandle;
  /** The last component; '' when the path is the root itself. */
  name: string;
  /** The path after following links, as the machine sees it (for messages). */
  guestPath: string;
};

export class MachineRoot {
  readonly root: FileHandle;
  readonly #held: FileHandle[] = [];

  private constructor(root: FileHandle) {
    this.root = root;
  }

  static async open(rootfs: string): Promise<MachineRoot> {
    return new MachineRoot(await open(rootfs, DIR_FLAGS));
  }

  /**
   * Resolves `guestPath` to its directory (held open) and last name. Every component but the last
   * must be a directory or a relative symlink that stays inside the root (any symlink with
   * `chroot`); the last is followed the same way when `followLast`, else left as it is.
   */
  async resolve(guestPath: string, opts: ResolveOptions): Promise<Resolved> {
    const pending = validateGuestPath(guestPath);
    // The directories on the way, for '..'. Only the last MAX_HELD_DIRS stay open; one closed
    // earlier is reopened as its child's '..' and checked to be the very directory it was.
    const stack: (FileHandle | undefined)[] = [this.root];
    const closedIds: ({ dev: number; ino: number } | undefined)[] = [];
    const names: string[] = [];
    let links = 0;
    let retries = 0;
    /** A directory this call made, to be given to `owner` once opened (never through a path). */
    let madeHere: string | undefined;
    const top = () => stack[stack.length - 1]!; // always open: '..' reopens a closed one first
    const shown = (...more: string[]) => '/' + [...names, ...more].join('/');
    const again = (part: string) => {
      // A directory was just made, or something changed under us (a racing process): look again.
      if (++retries > MAX_LINKS) throw linkLoop(guestPath);
      pending.unshift(part);
    };
    const follow = async (part: string) => {
      if (++links > MAX_LINKS) throw linkLoop(guestPath);
      let target: string;
      try {
        target = await readlink(at(top(), part));
      } catch (err) {
        if (errno(err) === 'EINVAL' || errno(err) === 'ENOENT') return again(part);
        throw err;
      }
      if (target.startsWith('/') && opts.chroot) {
        for (const fh of stack.splice(1)) await fh?.close();
        names.length = 0;
      } else if (target.startsWith('/')) {
        throw new HangarError('path_escapes_root', `${guestPath} goes through the absolute symlink ${shown(part)} -> ${target}`, {
          hint: `the files API follows only relative symlinks; use the path it points to (${target}) directly`,
          details: { path: guestPath, symlink: shown(part), target },
        });
      }
      pending.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
    };
    try {
      while (pending.length > 0) {
        const part = pending.shift()!;
        if (part === '..') {
          if (stack.length === 1 && opts.chroot) continue;
          if (stack.length === 1) {
            throw new HangarError('path_escapes_root', `${guestPath} leads above the machine's root through a symlink`, {
              hint: "a symlink on the path has a target with '..' that climbs out of the machine; fix or remove the link",
              details: { path: guestPath },
            });
          }
          const child = stack.pop()!;
          names.pop();
          try {
            if (!stack[stack.length - 1]) stack[stack.length - 1] = await reopenParent(child, closedIds[stack.length - 1]!, guestPath);
          } finally {
            await child.close();
          }
          continue;
        }
        if (pending.length === 0) {
          if (opts.followLast && (await lstat(at(top(), part)).catch(() => undefined))?.isSymbolicLink()) {
            await follow(part);
            continue;
          }
          return this.#keep(stack, part, shown(part));
        }
        let fh: FileHandle;
        try {
          fh = await open(at(top(), part), DIR_FLAGS);
        } catch (err) {
          if (errno(err) === 'ENOENT') {
            if (!opts.createParents) throw notFound(shown(part), guestPath);
            const made = await mkdir(at(top(), part), { mode: 0o755 }).then(() => true, (e: unknown) => {
              if (errno(e) !== 'EEXIST') throw e;
              return false;
            });
            if (made && opts.owner) madeHere = part;
            again(part);
            continue;
          }
          if (errno(err) !== 'ENOTDIR') throw err;
          const st = await lstat(at(top(), part)).catch(() => undefined);
          if (st?.isSymbolicLink()) await follow(part);
          else if (!st || st.isDirectory()) again(part);
          else throw notADirectory(shown(part), guestPath);
          continue;
        }
        stack.push(fh);
        names.push(part);
        retries = 0;
        const far = stack.length - 1 - MAX_HELD_DIRS;
        if (far > 0 && stack[far]) {
          const st = await stack[far]!.stat();
          closedIds[far] = { dev: st.dev, ino: st.ino };
          await stack[far]!.close();
          stack[far] = undefined;
        }
        if (madeHere === part && opts.owner) await fh.chown(opts.owner.uid, opts.owner.gid);
        madeHere = undefined;
      }
      return this.#keep(stack, '', shown());
    } catch (err) {
      for (const fh of stack.slice(1)) await fh?.close();
      throw fsError(err, guestPath);
    }
  }

  #keep(stack: (FileHandle | undefined)[], name: string, guestPath: string): Resolved {
    const dir = stack.pop()!;
    if (dir !== this.root) this.#held.push(dir);
    for (const fh of stack.slice(1)) void fh?.close().catch(() => undefined);
    return { dir, name, guestPath };
  }

  /** Opens the directory at a resolved path (the root itself for ''); the caller closes it. */
  async openDir(r: Resolved): Promise<FileHandle> {
    return openChildDir(r.dir, r.name === '' ? '.' : r.name, r.guestPath);
  }

  async close(): Promise<void> {
    for (const fh of this.#held.splice(0)) await fh.close().catch(() => undefined);
    await this.root.close().catch(() => undefined);
  }
}

/** `child`'s parent, which must be the directory `id` names: the machine may have moved `child` since. */
async function reopenParent(child: FileHandle, id: { dev: number; ino: number }, guestPath: string): Promise<FileHandle> {
  const parent = await open(at(child, '..'), DIR_FLAGS);
  const st = await parent.stat();
  if (st.dev === id.dev && st.ino === id.ino) return parent;
  await parent.close();
  throw new HangarError('path_escapes_root', `a directory on ${guestPath} was moved while it was resolved`, {
    hint: 'something inside the machine is changing this path; retry once it settles',
    details: { path: guestPath },
  });
}

/** Opens the directory `name` in `dir`, never through a symlink. */
export async function openChildDir(dir: FileHandle, name: string, guestPath: string): Promise<FileHandle> {
  try {
    return await open(at(dir, name), DIR_FLAGS);
  } catch (err) {
    if (errno(err) === 'ENOENT') throw notFound(guestPath);
    if (errno(err) === 'ENOTDIR') {
      const st = await lstat(at(dir, name)).catch(() => undefined);
      if (st?.isSymbolicLink()) {
        throw new HangarError('path_escapes_root', `${guestPath} was replaced by a symlink while in use`, {
          hint: 'something inside the machine is changing this path; retry once it settles',
          details: { path: guestPath },
        });
      }
      throw notADirectory(guestPath);
    }
    throw err;
  }
}

export function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

export function notFound(path: string, asked = path): HangarError {
  return new HangarError('file_not_found', `no such file or directory: ${path}${asked !== path ? ` (resolving ${asked})` : ''}`, {
    hint: 'list the parent directory: GET …/files/list?path=DIR',
    details: { path: asked },
  });
}

export function notADirectory(path: string, asked = path): HangarError {
  return new HangarError('not_a_directory', `${path} is not a directory${asked !== path ? ` (resolving ${asked})` : ''}`, {
    hint: 'check the path; stat it with GET …/files/stat?path=',
    details: { path: asked },
  });
}

function linkLoop(path: string): HangarError {
  return new HangarError('path_escapes_root', `too many symbolic links resolving ${path}`, {
    hint: 'the path has a symlink loop; fix the links inside the machine',
    details: { path },
  });
}

export function isADirectory(path: string): HangarError {
  return new HangarError('is_a_directory', `${path} is a directory`, {
    hint: 'list it with GET …/files/list?path=, or download it with GET …/files/tar?path=',
    details: { path },
  });
}

/** A filesystem error as the files API reports it; HangarErrors and unknown errors pass through. */
export function fsError(err: unknown, path: string): unknown {
  const code = errno(err);
  switch (code) {
    case 'ENOENT':
      return notFound(path);
    case 'ENOTDIR':
      return notADirectory(path);
    case 'EISDIR':
      return isADirectory(path);
    case 'EEXIST':
      return new HangarError('file_exists', `${path} already exists`, { hint: 'remove it first, or choose another name', details: { path } });
    case 'ENOTEMPTY':
      return new HangarError('directory_not_empty', `directory ${path} is not empty`, {
        hint: 'remove it with recursive=true, or empty it first',
        details: { path },
      });
    case 'ELOOP':
      return new HangarError('path_escapes_root', `${path} was replaced by a symlink while in use`, {
        hint: 'something inside the machine is changing this path; retry once it settles',
        details: { path },
      });
    case 'ECONNRESET':
    case 'ERR_STREAM_PREMATURE_CLOSE':
      return new HangarError('bad_request', `the upload to ${path} broke off before its end; nothing was written`, {
        hint: 'send it again',
        details: { path },
      });
    case 'ENAMETOOLONG':
      return new HangarError('validation_failed', `a name in ${path} is too long`, { hint: 'names are at most 255 bytes', details: { path } });
    case 'ENOSPC':
    case 'EDQUOT':
      return new HangarError('internal', `no space left on the host's disk writing ${path}`, { hint: 'free space on the host, or write less', cause: err });
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
    case 'EBUSY':
    case 'ETXTBSY':
    case 'EXDEV':
      return new HangarError('bad_request', `${path}: ${(err as Error).message.replace(/^[A-Z]+: /, '').split(',')[0]}`, {
        hint: 'the file system refused the operation; check the file with GET …/files/stat?path=',
        details: { path, errno: code },
      });
  }
  return err;
}
