import { execFile } from 'node:child_process';
import { chownSync, mkdirSync, statSync } from 'node:fs';
import { readFile, mkdir } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';
import { type IdRange, mountIdmapped } from './idmapped-mount.ts';
import { removeHostTree } from './tree-remove.ts';
import { MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MountApiUnsupported } from './mount-api.ts';
import { mountOverlayFs, type OverlaySpec } from './overlay-mount.ts';

// A machine's root filesystem: the image's unpacked layers as overlay lower dirs under one
// per-machine upper dir. The mount stays up across stop/start so start needs no mount at all.
//
// With an id range (a machine in its own user namespace), the layers are seen through an idmapped
// view of the directory holding them, so the image's root-owned files belong to the machine's root
// while the one copy on disk stays shared; the upper dir belongs to the range's root.

const run = promisify(execFile);

export type OverlayLayout = {
  lowerDirs: string[];
  upperDir: string;
  workDir: string;
  target: string;
  /** The machine's id range, and where the idmapped view of its layers' directory is mounted. */
  idmap?: { range: IdRange; lowerView: string };
};

/** The idmapped view of the image's layers a machine in its own user namespace needs, if not mounted yet; needs no disk. */
export async function mountLowerView(layout: Pick<OverlayLayout, 'lowerDirs' | 'idmap'>): Promise<void> {
  if (!layout.idmap) return;
  const source = dirname(layout.lowerDirs[0]!);
  if (!isViewOf(layout.idmap.lowerView, source)) await mountIdmapped(source, layout.idmap.lowerView, layout.idmap.range);
}

export async function mountOverlay(layout: OverlayLayout): Promise<void> {
  const { lowerDirs, upperDir, workDir, target, idmap } = layout;
  if (lowerDirs.length === 0) throw new HangarError('unsupported_image', 'image has no layers', { hint: 'use an image with at least one layer' });
  // Synchronous, as the other metadata calls on a create's path: each takes microseconds, where
  // a trip through the thread pool costs a turn of the loop (milliseconds on a busy host).
  const madeUpper = mkdirSync(upperDir, { recursive: true });
  const madeWork = mkdirSync(workDir, { recursive: true });
  mkdirSync(target, { recursive: true });
  const { lower, cwd } = lowerSpec(layout);
  if (idmap) {
    await mountLowerView(layout);
    // Only when new: the machine's root may since have given its / to someone else.
    if (madeUpper !== undefined) chownSync(upperDir, idmap.range.base, idmap.range.base);
    if (madeWork !== undefined) chownSync(workDir, idmap.range.base, idmap.range.base);
  }
  const options = `nodev,lowerdir=${lower},upperdir=${upperDir},workdir=${workDir}`;
  try {
    if (!(await mountThroughApi({ lowerDirs: absoluteLowerDirs(layout), upperDir, workDir, target, attrs: MOUNT_ATTR_NODEV }))) {
      await run('mount', ['-t', 'overlay', 'overlay', '-o', options, target], cwd ? { cwd } : {});
    }
  } catch (err) {
    throw new HangarError('runtime_error', `cannot mount the root filesystem at ${target}: ${stderrOf(err)}`, {
      hint: 'the host must support overlayfs; check `dmesg` for overlay errors',
      cause: err,
    });
  }
}

/** Whether this kernel took the mount through its mount API; false (and never tried again) when it lacks `lowerdir+`. */
let apiUnsupported = false;
async function mountThroughApi(spec: OverlaySpec): Promise<boolean> {
  if (apiUnsupported) return false;
  try {
    await mountOverlayFs(spec);
    return true;
  } catch (err) {
    if (!(err instanceof MountApiUnsupported)) throw err;
    apiUnsupported = true;
    return false;
  }
}

/** The image's layers top-most first, as absolute paths (through the idmapped view when there is one). */
function absoluteLowerDirs(layout: Pick<OverlayLayout, 'lowerDirs' | 'idmap'>): string[] {
  const topFirst = [...layout.lowerDirs].reverse();
  return layout.idmap ? topFirst.map((d) => join(layout.idmap!.lowerView, basename(d))) : topFirst;
}

/**
 * The image's layers as overlay names them, top-most first; the options must fit in one page, so
 * layers sharing a parent (the image store's layers/ dir) are named relative to it (the cwd).
 */
function lowerSpec(layout: Pick<OverlayLayout, 'lowerDirs' | 'idmap'>): { lower: string; cwd?: string } {
  const topFirst = [...layout.lowerDirs].reverse();
  const parent = dirname(topFirst[0]!);
  const shared = topFirst.every((d) => dirname(d) === parent);
  if (layout.idmap && !shared) throw new HangarError('runtime_error', 'an idmapped root filesystem needs its layers in one directory', { hint: 'recreate the machine' });
  if (!shared) return { lower: topFirst.join(':') };
  return { lower: topFirst.map((d) => basename(d)).join(':'), cwd: layout.idmap ? layout.idmap.lowerView : parent };
}

/**
 * A read-only view at `target` of `top` (a writable layer as a checkpoint kept it) over the
 * layout's image layers: the machine's filesystem as it was then. The layout must be mounted.
 */
export async function mountReadOnlyView(layout: OverlayLayout, top: string, target: string): Promise<void> {
  const { lower, cwd } = lowerSpec(layout);
  await mkdir(target, { recursive: true });
  try {
    if (!(await mountThroughApi({ lowerDirs: [top, ...absoluteLowerDirs(layout)], target, attrs: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID }))) {
      await run('mount', ['-t', 'overlay', 'overlay', '-o', `ro,nodev,nosuid,lowerdir=${top}:${lower}`, target], cwd ? { cwd } : {});
    }
  } catch (err) {
    throw new HangarError('storage_error', `cannot mount a view of ${top} at ${target}: ${stderrOf(err)}`, { hint: 'check `dmesg` for overlay errors', cause: err });
  }
}

/** Unmounts the root filesystem, then the view of its layers (which it held busy). */
export async function unmountOverlay(layout: Pick<OverlayLayout, 'target' | 'idmap'>): Promise<void> {
  await unmount(layout.target);
  if (layout.idmap) await unmount(layout.idmap.lowerView);
}

export async function unmount(target: string): Promise<void> {
  if (!(await isMounted(target))) return;
  try {
    await run('umount', [target]);
  } catch {
    // A process still holding the mount (a racing exec) must not block destroy; detach it.
    await run('umount', ['-l', target]);
  }
}

/**
 * Whether a filesystem with a device of its own (an overlay, an image on a loop device) is
 * mounted on `target`, as isMounted says for those: its root's device differs from its parent's.
 * Two stats, where mountinfo grows by a few lines with every machine.
 */
export function isDeviceMounted(target: string): boolean {
  const [self, parent] = [statSync(target, { throwIfNoEntry: false }), statSync(dirname(target), { throwIfNoEntry: false })];
  return self !== undefined && parent !== undefined && self.dev !== parent.dev;
}

/** Whether a bind mount (idmapped or not) of `source` is on `target`: its root is then the very same directory. */
function isViewOf(target: string, source: string): boolean {
  const [view, original] = [statSync(target, { throwIfNoEntry: false }), statSync(source)];
  return view !== undefined && view.dev === original.dev && view.ino === original.ino;
}

export async function isMounted(target: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const escaped = target.replace(/[ \t\n\\]/g, (c) => '\\' + c.charCodeAt(0).toString(8).padStart(3, '0'));
  return info.split('\n').some((line) => line.split(' ')[4] === escaped);
}

/** Empties the writable layer (config.rootfs.persist = never); mountOverlay makes it anew. The overlay must be unmounted. */
export async function resetUpper(layout: OverlayLayout): Promise<void> {
  // The machine made this tree: it may be deeper than any path or descriptor budget allows.
  await Promise.all([removeHostTree(layout.upperDir), removeHostTree(layout.workDir)]);
}

function stderrOf(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  return (e.stderr || e.message || String(err)).trim();
}
