// The filesystem under machines' disks, checkpoints and volumes: one that clones a file by sharing
// its blocks (reflink), so a checkpoint or a fork of a disk image copies no data. A data dir on
// XFS or btrfs is used as it is; on anything else (ext4, the common case) the pool is an XFS
// filesystem in a sparse file under the data dir, as large as the host filesystem holding it and
// grown with it at each daemon start.
import { execFile } from 'node:child_process';
import { constants, copyFileSync, statfsSync } from 'node:fs';
import { mkdir, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';
import { isMounted } from './overlay-rootfs.ts';
import { mountImage } from './loop-device.ts';
import { MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID } from './mount-api.ts';
import { GIB, growXfsOnline } from './disk-image.ts';

const run = promisify(execFile);

export type StoragePool = {
  /** Where disk images, checkpoints and volumes live; files here clone by reflink. */
  root: string;
  /** How the pool came to be, for the daemon's startup line. */
  kind: 'data-dir' | 'loop-xfs';
};

/** Opens the data dir's pool, making it on first use. */
export async function openStoragePool(dataDir: string): Promise<StoragePool> {
  const dir = join(dataDir, 'storage');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (await clonesFiles(dir)) return { root: dir, kind: 'data-dir' };
  const image = join(dir, 'pool.xfs');
  const root = join(dir, 'pool');
  await mkdir(root, { recursive: true, mode: 0o700 });
  const hostBytes = hostFilesystemBytes(dir);
  const existing = await stat(image).catch(() => undefined);
  if (!existing) await makePoolImage(image, hostBytes);
  if (!(await isMounted(root))) await mountImage(image, root, { fstype: 'xfs', attrs: MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID });
  // The host's disk was enlarged: the pool follows it.
  if (existing && hostBytes > existing.size) await growXfsOnline(image, root, hostBytes / GIB);
  if (!(await clonesFiles(root))) {
    throw new HangarError('host_unsupported', `the storage pool at ${root} cannot clone files`, {
      hint: 'the pool needs XFS with reflink (xfsprogs 5.1 or newer): install xfsprogs, remove the pool image and restart',
    });
  }
  return { root, kind: 'loop-xfs' };
}

async function makePoolImage(image: string, bytes: number): Promise<void> {
  const partial = `${image}.partial`;
  await writeFile(partial, '');
  await truncate(partial, bytes);
  try {
    // 4 KiB sectors to match the loop device's blocks; a small log (the pool holds few, large files).
    await run('mkfs.xfs', ['-q', '-K', '-m', 'reflink=1', '-s', 'size=4096', '-l', 'size=64m', partial]);
  } catch (err) {
    await rm(partial, { force: true });
    throw new HangarError('host_unsupported', `cannot make the storage pool: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`, {
      hint: 'install xfsprogs (apt-get install xfsprogs), or put the data dir on XFS or btrfs',
      cause: err,
    });
  }
  await rename(partial, image);
}

function hostFilesystemBytes(dir: string): number {
  const s = statfsSync(dir);
  // Whole 1 GiB units, so that the apparent size only changes when the host's disk does.
  return Math.max(1, Math.floor((s.blocks * s.bsize) / GIB)) * GIB;
}

async function clonesFiles(dir: string): Promise<boolean> {
  const a = join(dir, '.reflink-probe');
  const b = `${a}.clone`;
  try {
    await writeFile(a, 'probe');
    copyFileSync(a, b, constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false;
  } finally {
    await rm(a, { force: true });
    await rm(b, { force: true });
  }
}
