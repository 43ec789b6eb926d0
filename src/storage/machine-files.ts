import { posix } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import type { MachineConfig } from '../protocol/machine-config.ts';
import { isADirectory, MachineRoot, ROOT_OWNER, type Owner } from './machine-fs-walk.ts';
import { writeFileAt } from './machine-fs-write.ts';
import { validateGuestPath } from './rootfs-path.ts';

// config.files: written into the machine's root filesystem before it runs, through the files
// API's write path (machine-fs-write.ts), so a device node, FIFO or socket the machine (or its
// image) put at a path is refused rather than written through. Paths resolve as the machine
// itself would (chroot semantics: an absolute symlink starts at the machine's root), through
// held-open directories, so nothing outside the machine is reached.

/** Validates every files[] entry up front so a bad path fails the request before any work. */
export function validateFiles(files: MachineConfig['files']): void {
  for (const file of files ?? []) {
    validateGuestPath(file.guest_path);
    if (file.raw_value === undefined) {
      throw new HangarError('validation_failed', `file ${file.guest_path} has no raw_value`, {
        hint: 'set raw_value to the base64 contents (secret_name is not supported yet)',
        details: { path: file.guest_path },
      });
    }
  }
}

/** Writes each entry (mode `mode`, default 0644); new files and directories go to `owner`. */
export async function writeMachineFiles(rootfs: string, files: MachineConfig['files'], owner: Owner = ROOT_OWNER): Promise<void> {
  if (!files?.length) return;
  const root = await MachineRoot.open(rootfs);
  try {
    for (const file of files) {
      const r = await root.resolve(file.guest_path, { followLast: true, createParents: true, owner, chroot: true });
      if (r.name === '') throw isADirectory(file.guest_path);
      const bytes = Buffer.from(file.raw_value ?? '', 'base64');
      const journal = { rootfs, guestDir: posix.dirname(r.guestPath) };
      await writeFileAt(r.dir, r.name, file.guest_path, [bytes], { mode: file.mode ?? 0o644, owner, journal });
    }
  } finally {
    await root.close();
  }
}
