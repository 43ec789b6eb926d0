// Filesystems in image files, mounted through loop devices. Node has no binding for the loop
// ioctls; koffi calls glibc's. Each device is configured to clear itself when its
// filesystem is unmounted (autoclear), so an unmount, lazy or not, is the whole teardown, and a
// crashed daemon leaves no device that outlives its mounts. Direct I/O keeps the image's data out
// of the page cache a second time (the filesystem inside caches it already).
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';
import { HangarError } from '../protocol/errors.ts';
import { type FsParam, MOUNT_ATTR_RDONLY, openMount, placeMount } from './mount-api.ts';

const LOOP_CTL_GET_FREE = 0x4c82;
const LOOP_CONFIGURE = 0x4c0a;
const LOOP_SET_CAPACITY = 0x4c07;
const LO_FLAGS_READ_ONLY = 1;
const LO_FLAGS_AUTOCLEAR = 4;
const LO_FLAGS_DIRECT_IO = 16;
const FIFREEZE = 0xc0045877;
const FITHAW = 0xc0045878;
const EBUSY = 16;
const EINVAL = 22;
const FREEZE_RETRIES = 500;

// struct loop_config: fd, block_size, struct loop_info64 (232 bytes), 8 reserved u64.
const LOOP_CONFIG_SIZE = 8 + 232 + 64;
const INFO_OFFSET = 8;
const INFO_FLAGS_OFFSET = INFO_OFFSET + 5 * 8 + 3 * 4;
const INFO_FILE_NAME_OFFSET = INFO_OFFSET + 5 * 8 + 4 * 4;

type Libc = {
  ioctl: (fd: number, request: number, ...args: unknown[]) => number;
  /** ioctl with one pointer argument, declared without the `...` so it can run on a worker thread. */
  ioctlPointer: { async: (fd: number, request: number, arg: Buffer, done: (err: unknown, result: number) => void) => void };
};

let libc: Libc | undefined;

function load(): Libc {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  libc = {
    ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)'),
    ioctlPointer: lib.func('int ioctl(int fd, unsigned long request, void *arg)'),
  };
  return libc;
}

function failed(what: string, path: string, hint: string): HangarError {
  const errno = koffi.errno();
  return new HangarError('storage_error', `${what} ${path} failed (errno ${errno})`, { hint, details: { errno, path } });
}

export type ImageMountOptions = { fstype: string; /** MOUNT_ATTR_* flags. */ attrs: number; params?: FsParam[]; readOnly?: boolean };

/**
 * The filesystem in `image`, through a fresh loop device, mounted nowhere yet: the descriptor
 * holds it (see openMount). The filesystem reads its metadata (milliseconds for ext4) on a worker
 * thread, so the daemon's loop goes on meanwhile.
 */
export async function openImageMount(image: string, opts: ImageMountOptions): Promise<number> {
  const readOnly = opts.readOnly ?? false;
  const backing = openSync(image, readOnly ? 'r' : 'r+');
  try {
    const { device, fd } = await configureFreeDevice(load(), backing, image, readOnly);
    try {
      // The device clears itself at its last close unless something holds it: the filesystem
      // must be made while our descriptor is still open.
      const params: FsParam[] = [['source', device], ...(readOnly ? [['ro'] as FsParam] : []), ...(opts.params ?? [])];
      return await openMount({ fstype: opts.fstype, params, attrs: opts.attrs | (readOnly ? MOUNT_ATTR_RDONLY : 0), onWorker: true });
    } catch (err) {
      throw new HangarError('storage_error', `mounting ${device} (${image}) failed: ${(err as Error).message}`, {
        hint: `check that ${image} holds a ${opts.fstype} filesystem; see dmesg`,
        details: { path: image },
        cause: err,
      });
    } finally {
      closeSync(fd);
    }
  } finally {
    closeSync(backing);
  }
}

/** Mounts the filesystem in `image` at `target` (a directory) through a fresh loop device. */
export async function mountImage(image: string, target: string, opts: ImageMountOptions): Promise<void> {
  placeMount(await openImageMount(image, opts), target);
}

async function configureFreeDevice(sys: Libc, backing: number, image: string, readOnly: boolean): Promise<{ device: string; fd: number }> {
  const control = openSync('/dev/loop-control', 'r+');
  // The loop driver sets the device up (and flushes) on a worker thread: milliseconds the daemon's loop goes on meanwhile.
  const configure = async (fd: number, flags: number): Promise<number> => {
    const config = loopConfig(backing, image, flags);
    const result = await new Promise<number>((resolve, reject) => sys.ioctlPointer.async(fd, LOOP_CONFIGURE, config, (err, res) => (err ? reject(err) : resolve(res))));
    // errno stayed on the worker's thread: asking again here says why it failed, if it still does.
    return result < 0 ? sys.ioctl(fd, LOOP_CONFIGURE, 'void *', config) : result;
  };
  try {
    // Another process may take the free device between our asking and configuring it: ask again.
    for (let attempt = 0; attempt < 20; attempt++) {
      const n = sys.ioctl(control, LOOP_CTL_GET_FREE);
      if (n < 0) throw failed('finding a free loop device for', image, 'the host needs the loop module (modprobe loop)');
      const device = `/dev/loop${n}`;
      const fd = openSync(device, 'r+');
      let flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO | (readOnly ? LO_FLAGS_READ_ONLY : 0);
      let result = await configure(fd, flags);
      // Direct I/O needs the image's filesystem to support it (tmpfs does not): go without.
      if (result < 0 && koffi.errno() === EINVAL) {
        flags &= ~LO_FLAGS_DIRECT_IO;
        result = await configure(fd, flags);
      }
      if (result === 0) return { device, fd };
      const errno = koffi.errno();
      closeSync(fd);
      if (errno !== EBUSY) throw failed(`configuring ${device} for`, image, 'see dmesg for loop device errors');
    }
    throw new HangarError('storage_error', `no free loop device for ${image}`, { hint: 'the host is short of loop devices; retry' });
  } finally {
    closeSync(control);
  }
}

function loopConfig(backing: number, image: string, flags: number): Buffer {
  const config = Buffer.alloc(LOOP_CONFIG_SIZE);
  config.writeUInt32LE(backing, 0);
  // Blocks of 4 KiB: direct I/O to the image file then needs no read-modify-write.
  config.writeUInt32LE(4096, 4);
  config.writeUInt32LE(flags, INFO_FLAGS_OFFSET);
  Buffer.from(image.slice(-63)).copy(config, INFO_FILE_NAME_OFFSET);
  return config;
}

/** Makes a loop device see its image's new size after the image grew. */
export function refreshLoopCapacity(device: string): void {
  const sys = load();
  const fd = openSync(device, 'r');
  try {
    if (sys.ioctl(fd, LOOP_SET_CAPACITY, 'long', 0) < 0) throw failed('resizing', device, 'see dmesg for loop device errors');
  } finally {
    closeSync(fd);
  }
}

/** Thaws a filesystem a daemon killed mid-capture left frozen; true if it was frozen. */
export function thaw(mountPoint: string): boolean {
  const sys = load();
  const fd = openSync(mountPoint, 'r');
  try {
    return sys.ioctl(fd, FITHAW, 'long', 0) === 0;
  } finally {
    closeSync(fd);
  }
}

/**
 * Runs `fn` with the filesystem mounted at `mountPoint` frozen: every write already made is on
 * the image, and writers block (they are not failed) until it thaws.
 */
export async function withFrozen<T>(mountPoint: string, fn: () => Promise<T>): Promise<T> {
  const sys = load();
  const fd = openSync(mountPoint, 'r');
  try {
    // A filesystem is frozen by one caller at a time (a volume's snapshot and its machine's
    // checkpoint may meet): wait for the other's thaw, which comes within milliseconds.
    for (let attempt = 0; sys.ioctl(fd, FIFREEZE, 'long', 0) < 0; attempt++) {
      if (koffi.errno() !== EBUSY || attempt >= FREEZE_RETRIES) throw failed('freezing', mountPoint, 'another freeze may be under way; retry');
      await new Promise((r) => setTimeout(r, 10));
    }
    try {
      return await fn();
    } finally {
      sys.ioctl(fd, FITHAW, 'long', 0);
    }
  } finally {
    closeSync(fd);
  }
}
