// A volume: an XFS filesystem in a sparse image in the storage pool, mounted on the host (nodev,
// nosuid) while a machine has it, and bound into that machine through an idmapped mount. Its files
// keep unshifted ids (0..65535), so it moves between machines of different id ranges as it is.
//
// XFS rather than ext4 (which machine disks use) because a volume must grow while its machine
// runs: an online ext4 grow needs CAP_SYS_RESOURCE, which this daemon may lack (a host container),
// while xfs_growfs needs only CAP_SYS_ADMIN (5-6 ms here). The price, measured on 1 GB: a mount
// takes ~8 ms against ext4's ~6, and the 64 MiB log (xfsprogs' minimum) plus metadata leave
// 926 MiB free against ext4's 973. The log's blocks are the template's, shared by every volume.
import { mkdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import { type Capture, cloneImage, GIB, growXfsOnline, type DiskUsage, type ImageTemplates, imageBytes, mountDiskImage, stderrOf, usageOf } from './disk-image.ts';
import { MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID } from './mount-api.ts';
import { isMounted, unmount } from './overlay-rootfs.ts';
import type { StoragePool } from './storage-pool.ts';

export const VOLUME_FS = 'xfs';

export class VolumeDisks {
  readonly #pool: StoragePool;
  readonly #templates: ImageTemplates;
  readonly #mountRoot: string;

  /** `mountRoot`: where volumes are mounted on the host, one directory each (under the data dir,
   * whose mounts reach the runtime's namespace). */
  constructor(pool: StoragePool, templates: ImageTemplates, mountRoot: string) {
    this.#pool = pool;
    this.#templates = templates;
    this.#mountRoot = mountRoot;
  }

  image(id: string): string {
    return join(this.#pool.root, 'volumes', `${id}.${VOLUME_FS}`);
  }

  snapshotImage(volumeId: string, snapshotId: string): string {
    return join(this.#pool.root, 'volume-snapshots', volumeId, `${snapshotId}.${VOLUME_FS}`);
  }

  mountPoint(id: string): string {
    return join(this.#mountRoot, id);
  }

  /** A new, empty volume. */
  async create(id: string, sizeGb: number): Promise<void> {
    await this.#templates.cloneTo(this.image(id), VOLUME_FS, sizeGb);
  }

  /** A new volume holding what `image` holds (a snapshot, another volume's capture), at least `sizeGb`. */
  async createFrom(id: string, image: string, sizeGb: number): Promise<void> {
    await cloneImage(image, this.image(id));
    await this.fitTo(id, sizeGb);
  }

  /** Grows the image to `sizeGb` if it is smaller (a capture made before the volume was extended). */
  async fitTo(id: string, sizeGb: number): Promise<void> {
    const size = imageBytes(this.image(id));
    if (size !== undefined && size < sizeGb * GIB) await this.grow(id, sizeGb);
  }

  async ensureMounted(id: string): Promise<void> {
    // Only the daemon's: crun opens the source as the host's root, and no host user may browse a volume.
    await mkdir(this.#mountRoot, { recursive: true, mode: 0o700 });
    await mountDiskImage(this.image(id), this.mountPoint(id), VOLUME_FS, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
  }

  isMounted(id: string): Promise<boolean> {
    return isMounted(this.mountPoint(id));
  }

  async unmount(id: string): Promise<void> {
    await unmount(this.mountPoint(id));
  }

  /** What capturing the volume to `dest` takes; see captureImages (frozen if mounted). */
  capture(id: string, dest: string): Capture {
    return { image: this.image(id), mountPoint: this.mountPoint(id), dest };
  }

  /**
   * Grows the volume to `sizeGb`, online: a machine using it keeps running and sees the new size.
   * XFS grows only mounted, so a volume no machine has is mounted for the grow.
   */
  async grow(id: string, sizeGb: number): Promise<void> {
    const wasMounted = await this.isMounted(id);
    await this.ensureMounted(id);
    try {
      await growXfsOnline(this.image(id), this.mountPoint(id), sizeGb);
    } catch (err) {
      throw new HangarError('storage_error', `cannot grow volume ${id}: ${stderrOf(err)}`, {
        hint: 'retry the extend; the files are kept, and the volume keeps its old size until a grow succeeds',
        cause: err,
      });
    } finally {
      if (!wasMounted) await this.unmount(id);
    }
  }

  usage(id: string): DiskUsage | undefined {
    return usageOf(this.mountPoint(id));
  }

  /** The volume and its snapshots. */
  async remove(id: string): Promise<void> {
    await this.unmount(id);
    // rmdir, never rm -r: were the volume still mounted there, its files would go.
    await rmdir(this.mountPoint(id)).catch(() => undefined);
    await rm(this.image(id), { force: true });
    await rm(join(this.#pool.root, 'volume-snapshots', id), { recursive: true, force: true });
  }
}
