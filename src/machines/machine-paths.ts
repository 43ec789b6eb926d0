import { join } from 'node:path';
import type { OverlayLayout } from '../storage/overlay-rootfs.ts';
import { idRangeOf } from './id-ranges.ts';
import { CURRENT_LOG } from '../runtime/run-files.ts';

/** Where a machine's files live under the data dir (DESIGN.md, "Data dir"). */
export class MachinePaths {
  readonly root: string;

  constructor(dataDir: string) {
    this.root = join(dataDir, 'machines');
  }

  dir(id: string): string {
    return join(this.root, id);
  }

  rootfs(id: string): string {
    return join(this.root, id, 'rootfs');
  }

  bundle(id: string): string {
    return join(this.root, id, 'bundle');
  }

  /** Where the machine's own disk (its writable layer) is mounted. */
  disk(id: string): string {
    return join(this.root, id, 'disk');
  }

  log(id: string): string {
    return join(this.root, id, 'logs', CURRENT_LOG);
  }

  /** The machine's egress log (egress-log.ts); rotated to `<this>.1`. */
  egressLog(id: string): string {
    return join(this.root, id, 'egress.log');
  }

  overlay(m: { id: string; layerDirs: string[]; uidBase: number; diskGb: number }): OverlayLayout {
    const range = idRangeOf(m.uidBase);
    // Machines made before they had disks keep their writable layer in the data dir itself.
    const writable = m.diskGb > 0 ? this.disk(m.id) : this.dir(m.id);
    return {
      lowerDirs: m.layerDirs,
      upperDir: join(writable, 'upper'),
      workDir: join(writable, 'work'),
      target: this.rootfs(m.id),
      ...(range ? { idmap: { range, lowerView: join(this.root, m.id, 'layers') } } : {}),
    };
  }
}
