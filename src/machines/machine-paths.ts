import { join } from 'node:path';
import type { OverlayLayout } from '../storage/overlay-rootfs.ts';

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

  log(id: string): string {
    return join(this.root, id, 'logs', 'machine.log');
  }

  overlay(id: string, lowerDirs: string[]): OverlayLayout {
    return { lowerDirs, upperDir: join(this.root, id, 'upper'), workDir: join(this.root, id, 'work'), target: this.rootfs(id) };
  }
}
