// The kernel's mount API (fsopen, fsconfig, fsmount, move_mount; glibc ≥ 2.36 wraps them, koffi
// calls the wrappers) instead of mount(2) or a spawned mount(8). It can make a mount that is
// attached nowhere yet, held only by a descriptor: a disk mounted ahead and moved into place by
// a create in one call, or dropped with the descriptor if the daemon dies first.
import { closeSync, readSync } from 'node:fs';
import koffi from 'koffi';

const FSOPEN_CLOEXEC = 1;
const FSMOUNT_CLOEXEC = 1;
const FSCONFIG_SET_FLAG = 0;
const FSCONFIG_SET_STRING = 1;
const FSCONFIG_CMD_CREATE = 6;
const AT_FDCWD = -100;
const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
const OPEN_TREE_CLONE = 0x1;
const OPEN_TREE_CLOEXEC = 0o2000000;
const AT_EMPTY_PATH = 0x1000;
const AT_RECURSIVE = 0x8000;
const MNT_DETACH = 0x2;
const MOUNT_ATTR_SIZE_VER0 = 32;
const ENOSYS = 38;

export const MOUNT_ATTR_RDONLY = 0x1;
export const MOUNT_ATTR_NOSUID = 0x2;
export const MOUNT_ATTR_NODEV = 0x4;
export const MOUNT_ATTR_IDMAP = 0x100000;

type Api = {
  fsopen: (fsname: string, flags: number) => number;
  fsconfig: ((fd: number, cmd: number, key: string | null, value: string | null, aux: number) => number) & {
    async: (fd: number, cmd: number, key: string | null, value: string | null, aux: number, done: (err: unknown, result: number) => void) => void;
  };
  fsmount: (fd: number, flags: number, attrs: number) => number;
  moveMount: (fromDfd: number, from: string, toDfd: number, to: string, flags: number) => number;
  openTree: (dfd: number, path: string, flags: number) => number;
  mountSetattr: (dfd: number, path: string, flags: number, attr: object, size: number) => number;
  umount2: (target: string, flags: number) => number;
};

let api: Api | undefined;

function load(): Api {
  if (api) return api;
  const libc = koffi.load('libc.so.6');
  koffi.struct('mount_attr', { attr_set: 'uint64', attr_clr: 'uint64', propagation: 'uint64', userns_fd: 'uint64' });
  api = {
    fsopen: libc.func('int fsopen(const char *fsname, unsigned int flags)'),
    fsconfig: libc.func('int fsconfig(int fd, unsigned int cmd, const char *key, const char *value, int aux)'),
    fsmount: libc.func('int fsmount(int fs_fd, unsigned int flags, unsigned int attr_flags)'),
    moveMount: libc.func('int move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned int flags)'),
    openTree: libc.func('int open_tree(int dfd, const char *path, unsigned int flags)'),
    mountSetattr: libc.func('int mount_setattr(int dfd, const char *path, unsigned int flags, mount_attr *attr, size_t size)'),
    umount2: libc.func('int umount2(const char *target, int flags)'),
  };
  return api;
}

/** A mount call the kernel refused, with its errno. */
export class MountCallFailed extends Error {
  readonly errno: number;
  constructor(call: string, path: string) {
    const errno = koffi.errno();
    super(`${call} of ${path} failed (errno ${errno})`);
    this.errno = errno;
  }
}

/** Thrown when this kernel has no mount API; mount the old way instead. */
export class MountApiUnsupported extends Error {}

/** A parameter the filesystem refused, with the kernel's errno and its words for why. */
export class FsParamRefused extends Error {
  readonly key: string;
  readonly errno: number;
  constructor(key: string, errno: number, detail: string) {
    super(detail);
    this.key = key;
    this.errno = errno;
  }
}

/** A key with a value, or a flag (`noload`, `ro`) without one. */
export type FsParam = [key: string, value?: string];

export type FsSpec = {
  fstype: string;
  params: FsParam[];
  /** MOUNT_ATTR_* flags of the mount. */
  attrs: number;
  /** The filesystem reads its metadata (milliseconds for ext4) on a worker thread: the daemon's loop goes on. */
  onWorker?: boolean;
};

/**
 * A mount of a new filesystem, attached nowhere: the descriptor holds it (attachMount places
 * it; closing it unmounts). Failures say what the kernel said.
 */
export async function openMount(spec: FsSpec): Promise<number> {
  const sys = load();
  const fs = sys.fsopen(spec.fstype, FSOPEN_CLOEXEC);
  if (fs < 0) {
    const errno = koffi.errno();
    if (errno === ENOSYS) throw new MountApiUnsupported('fsopen is not available');
    throw new Error(`fsopen(${spec.fstype}) failed (errno ${errno})`);
  }
  try {
    for (const [key, value] of spec.params) {
      const result = value === undefined ? sys.fsconfig(fs, FSCONFIG_SET_FLAG, key, null, 0) : sys.fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0);
      if (result < 0) {
        const errno = koffi.errno();
        throw new FsParamRefused(key, errno, `${spec.fstype} ${value === undefined ? key : `${key}=${value}`}: ${kernelSays(fs) || `errno ${errno}`}`);
      }
    }
    const created = spec.onWorker
      ? await new Promise<number>((resolve, reject) => sys.fsconfig.async(fs, FSCONFIG_CMD_CREATE, null, null, 0, (err, res) => (err ? reject(err) : resolve(res))))
      : sys.fsconfig(fs, FSCONFIG_CMD_CREATE, null, null, 0);
    // errno stays on a worker's thread; the kernel's message stays on the context.
    if (created < 0) throw new Error(`${spec.fstype}: ${kernelSays(fs) || (spec.onWorker ? 'the filesystem refused to mount' : `errno ${koffi.errno()}`)}`);
    const mnt = sys.fsmount(fs, FSMOUNT_CLOEXEC, spec.attrs);
    if (mnt < 0) throw new Error(`fsmount of ${spec.fstype} failed (errno ${koffi.errno()})`);
    return mnt;
  } finally {
    closeSync(fs);
  }
}

/** Places a mount made by openMount or cloneTree at `target`; the descriptor may be closed after. */
export function attachMount(mnt: number, target: string): void {
  if (load().moveMount(mnt, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) throw new MountCallFailed('move_mount to', target);
}

/** Places `mnt` at `target` and closes its descriptor, whether it was placed or not. */
export function placeMount(mnt: number, target: string): void {
  try {
    attachMount(mnt, target);
  } finally {
    closeSync(mnt);
  }
}

/** A copy of the mount at `source` (with those under it when `recursive`), attached nowhere yet. */
export function cloneTree(source: string, opts: { recursive?: boolean } = {}): number {
  const tree = load().openTree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (opts.recursive ? AT_RECURSIVE : 0));
  if (tree < 0) throw new MountCallFailed('open_tree', source);
  return tree;
}

/** Sets and clears MOUNT_ATTR_* flags of a cloned tree and every mount in it; `usernsFd` with MOUNT_ATTR_IDMAP. */
export function setTreeAttrs(tree: number, attrs: { set: number; clear: number; usernsFd?: number }): void {
  const attr = { attr_set: attrs.set, attr_clr: attrs.clear, propagation: 0, userns_fd: attrs.usernsFd ?? 0 };
  if (load().mountSetattr(tree, '', AT_EMPTY_PATH | AT_RECURSIVE, attr, MOUNT_ATTR_SIZE_VER0) < 0) throw new MountCallFailed('mount_setattr', 'a cloned tree');
}

/** A second mount of what is mounted at `source`, at `target` (an existing file or directory), as `mount --bind` makes. */
export function bindMount(source: string, target: string): void {
  placeMount(cloneTree(source), target);
}

/** Takes the mount at `target` out of the tree at once; whoever uses it keeps it until they let go. */
export function detachMount(target: string): void {
  if (load().umount2(target, MNT_DETACH) < 0) throw new MountCallFailed('umount', target);
}

/** A new filesystem mounted at `target`. */
export async function mountAt(spec: FsSpec, target: string): Promise<void> {
  placeMount(await openMount(spec), target);
}

/** The messages the kernel left on a filesystem context ("e overlay: …" lines), for an error. */
function kernelSays(fs: number): string {
  const lines: string[] = [];
  const buf = Buffer.alloc(1024);
  for (let i = 0; i < 8; i++) {
    let n: number;
    try {
      n = readSync(fs, buf);
    } catch {
      break; // ENODATA: no more messages
    }
    if (n <= 0) break;
    lines.push(buf.toString('utf8', 0, n).replace(/^[ewi] /, ''));
  }
  return lines.join('; ');
}
