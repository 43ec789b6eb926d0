import { execFile } from 'node:child_process';
import { readFile, rm, mkdir } from 'node:fs/promises';
import { dirname, basename } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';

// A machine's root filesystem: the image's unpacked layers as overlay lower dirs under one
// per-machine upper dir. The mount stays up across stop/start so start needs no mount at all.

const run = promisify(execFile);

export type OverlayLayout = { lowerDirs: string[]; upperDir: string; workDir: string; target: string };

export async function mountOverlay(layout: OverlayLayout): Promise<void> {
  const { lowerDirs, upperDir, workDir, target } = layout;
  if (lowerDirs.length === 0) throw new HangarError('unsupported_image', 'image has no layers', { hint: 'use an image with at least one layer' });
  await Promise.all([mkdir(upperDir, { recursive: true }), mkdir(workDir, { recursive: true }), mkdir(target, { recursive: true })]);
  // overlay takes the lower dirs top-most first; the mount options must fit in one page, so
  // layers sharing a parent (the image store's layers/ dir) are named relative to it.
  const topFirst = [...lowerDirs].reverse();
  const parent = dirname(topFirst[0]!);
  const shared = topFirst.every((d) => dirname(d) === parent);
  const lower = shared ? topFirst.map((d) => basename(d)).join(':') : topFirst.join(':');
  const options = `nodev,lowerdir=${lower},upperdir=${upperDir},workdir=${workDir}`;
  try {
    await run('mount', ['-t', 'overlay', 'overlay', '-o', options, target], shared ? { cwd: parent } : {});
  } catch (err) {
    throw new HangarError('runtime_error', `cannot mount the root filesystem at ${target}: ${stderrOf(err)}`, {
      hint: 'the host must support overlayfs; check `dmesg` for overlay errors',
      cause: err,
    });
  }
}

export async function unmountOverlay(target: string): Promise<void> {
  if (!(await isMounted(target))) return;
  try {
    await run('umount', [target]);
  } catch {
    // A process still holding the mount (a racing exec) must not block destroy; detach it.
    await run('umount', ['-l', target]);
  }
}

export async function isMounted(target: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const escaped = target.replace(/[ \t\n\\]/g, (c) => '\\' + c.charCodeAt(0).toString(8).padStart(3, '0'));
  return info.split('\n').some((line) => line.split(' ')[4] === escaped);
}

/** Empties the writable layer (config.rootfs.persist = never). The overlay must be unmounted. */
export async function resetUpper(layout: OverlayLayout): Promise<void> {
  await Promise.all([rm(layout.upperDir, { recursive: true, force: true }), rm(layout.workDir, { recursive: true, force: true })]);
  await Promise.all([mkdir(layout.upperDir, { recursive: true }), mkdir(layout.workDir, { recursive: true })]);
}

function stderrOf(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  return (e.stderr || e.message || String(err)).trim();
}
