// Extended attributes of a file, read without following a symlink in the last component. Node
// has no binding for them; koffi calls glibc's (as loop-device.ts does for mount). Callers pass
// descriptor-relative paths (`/proc/self/fd/N/name`), so the lookup starts at a directory they hold.
import koffi from 'koffi';

const ERANGE = 34;
const ENODATA = 61;
const ENOTSUP = 95;

type Libc = {
  llistxattr: (path: string, list: Buffer | null, size: number) => number;
  lgetxattr: (path: string, name: string, value: Buffer | null, size: number) => number;
};

let libc: Libc | undefined;

function load(): Libc {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  libc = {
    llistxattr: lib.func('long llistxattr(const char *path, void *list, size_t size)'),
    lgetxattr: lib.func('long lgetxattr(const char *path, const char *name, void *value, size_t size)'),
  };
  return libc;
}

/** Sizing call then reading call; retried when the attribute grew in between (ERANGE). */
function sized(call: (buf: Buffer | null, size: number) => number, what: string): Buffer | undefined {
  for (let attempt = 0; attempt < 5; attempt++) {
    const size = call(null, 0);
    if (size < 0) {
      const errno = koffi.errno();
      if (errno === ENODATA || errno === ENOTSUP) return undefined;
      throw Object.assign(new Error(`${what} failed (errno ${errno})`), { errno });
    }
    if (size === 0) return Buffer.alloc(0);
    const buf = Buffer.alloc(size);
    const got = call(buf, size);
    if (got >= 0) return buf.subarray(0, got);
    if (koffi.errno() !== ERANGE) throw Object.assign(new Error(`${what} failed (errno ${koffi.errno()})`), { errno: koffi.errno() });
  }
  throw new Error(`${what} kept changing size`);
}

/** Every extended attribute of `path` (not followed), name → raw value. */
export function readXattrs(path: string): Map<string, Buffer> {
  const sys = load();
  const out = new Map<string, Buffer>();
  const list = sized((b, n) => sys.llistxattr(path, b, n), `listing xattrs of ${path}`);
  if (!list || list.length === 0) return out;
  for (const name of list.toString('latin1').split('\0')) {
    if (!name) continue;
    const value = sized((b, n) => sys.lgetxattr(path, name, b, n), `reading xattr ${name} of ${path}`);
    if (value) out.set(name, value);
  }
  return out;
}
