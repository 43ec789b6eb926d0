// Overlay mounts through the kernel's mount API (fsopen, fsconfig, fsmount, move_mount; glibc
// ≥ 2.36 wraps them, koffi calls the wrappers) instead of a spawned mount(8): a create mounts one,
// and a spawn from the daemon costs more than the mount. Each lower layer is its own `lowerdir+`
// parameter (Linux ≥ 6.8), so no option string has to fit in a page and no path is taken
// relative to a working directory. Older kernels answer EINVAL to that key: the caller then
// mounts the old way.
import { closeSync, readSync } from 'node:fs';
import koffi from 'koffi';

const FSOPEN_CLOEXEC = 1;
const FSMOUNT_CLOEXEC = 1;
const FSCONFIG_SET_STRING = 1;
const FSCONFIG_CMD_CREATE = 6;
const AT_FDCWD = -100;
const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
const EINVAL = 22;
const ENOSYS = 38;

export const MOUNT_ATTR_RDONLY = 0x1;
export const MOUNT_ATTR_NOSUID = 0x2;
export const MOUNT_ATTR_NODEV = 0x4;

type Api = {
  fsopen: (fsname: string, flags: number) => number;
  fsconfig: (fd: number, cmd: number, key: string | null, value: string | null, aux: number) => number;
  fsmount: (fd: number, flags: number, attrs: number) => number;
  moveMount: (fromDfd: number, from: string, toDfd: number, to: string, flags: number) => number;
};

let api: Api | undefined;

function load(): Api {
  if (api) return api;
  const libc = koffi.load('libc.so.6');
  api = {
    fsopen: libc.func('int fsopen(const char *fsname, unsigned int flags)'),
    fsconfig: libc.func('int fsconfig(int fd, unsigned int cmd, const char *key, const char *value, int aux)'),
    fsmount: libc.func('int fsmount(int fs_fd, unsigned int flags, unsigned int attr_flags)'),
    moveMount: libc.func('int move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned int flags)'),
  };
  return api;
}

export type OverlaySpec = {
  /** Absolute paths, the top-most first. */
  lowerDirs: string[];
  /** Both or neither: without them the overlay is read-only. */
  upperDir?: string;
  workDir?: string;
  target: string;
  /** MOUNT_ATTR_* flags of the mount. */
  attrs: number;
};

/** Thrown when this kernel cannot mount an overlay this way; mount it with mount(8) instead. */
export class OverlayApiUnsupported extends Error {}

/** Mounts the overlay at `target`; a failure says what the kernel said. */
export function mountOverlayFs(spec: OverlaySpec): void {
  const sys = load();
  const fs = sys.fsopen('overlay', FSOPEN_CLOEXEC);
  if (fs < 0) {
    const errno = koffi.errno();
    if (errno === ENOSYS) throw new OverlayApiUnsupported('fsopen is not available');
    throw new Error(`fsopen(overlay) failed (errno ${errno})`);
  }
  let mnt = -1;
  try {
    const set = (key: string, value: string) => {
      if (sys.fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0) === 0) return;
      const errno = koffi.errno();
      if (key === 'lowerdir+' && errno === EINVAL) throw new OverlayApiUnsupported('lowerdir+ needs Linux 6.8');
      throw new Error(`overlay ${key}=${value}: ${kernelSays(fs) || `errno ${errno}`}`);
    };
    for (const dir of spec.lowerDirs) set('lowerdir+', dir);
    if (spec.upperDir && spec.workDir) {
      set('upperdir', spec.upperDir);
      set('workdir', spec.workDir);
    }
    if (sys.fsconfig(fs, FSCONFIG_CMD_CREATE, null, null, 0) < 0) throw new Error(`overlay: ${kernelSays(fs) || `errno ${koffi.errno()}`}`);
    mnt = sys.fsmount(fs, FSMOUNT_CLOEXEC, spec.attrs);
    if (mnt < 0) throw new Error(`fsmount of the overlay failed (errno ${koffi.errno()})`);
    if (sys.moveMount(mnt, '', AT_FDCWD, spec.target, MOVE_MOUNT_F_EMPTY_PATH) < 0) throw new Error(`move_mount to ${spec.target} failed (errno ${koffi.errno()})`);
  } finally {
    if (mnt >= 0) closeSync(mnt);
    closeSync(fs);
  }
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
