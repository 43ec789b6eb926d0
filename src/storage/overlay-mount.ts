// Overlay mounts through the kernel's mount API instead of a spawned mount(8): a create mounts
// one, and a spawn from the daemon costs more than the mount. Each lower layer is its own
// `lowerdir+` parameter (Linux ≥ 6.8), so no option string has to fit in a page and no path is
// taken relative to a working directory. Older kernels answer EINVAL to that key: the caller then
// mounts the old way.
import { type FsParam, FsParamRefused, mountAt, MountApiUnsupported } from './mount-api.ts';

const EINVAL = 22;

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

/** Mounts the overlay at `target`; a failure says what the kernel said. MountApiUnsupported: use mount(8). */
export async function mountOverlayFs(spec: OverlaySpec): Promise<void> {
  const params: FsParam[] = spec.lowerDirs.map((dir) => ['lowerdir+', dir]);
  if (spec.upperDir && spec.workDir) params.push(['upperdir', spec.upperDir], ['workdir', spec.workDir]);
  try {
    await mountAt({ fstype: 'overlay', params, attrs: spec.attrs }, spec.target);
  } catch (err) {
    if (err instanceof FsParamRefused && err.key === 'lowerdir+' && err.errno === EINVAL) throw new MountApiUnsupported('lowerdir+ needs Linux 6.8');
    throw err;
  }
}
