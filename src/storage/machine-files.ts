import { mkdir, writeFile, chmod } from 'node:fs/promises';
import { dirname } from 'node:path';
import { HangarError } from '../protocol/errors.ts';
import type { MachineConfig } from '../protocol/machine-config.ts';
import { resolveInRoot, validateGuestPath } from './rootfs-path.ts';

// config.files: written into the machine's root filesystem before it runs.

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

export async function writeMachineFiles(rootfs: string, files: MachineConfig['files']): Promise<void> {
  for (const file of files ?? []) {
    const hostPath = await resolveInRoot(rootfs, file.guest_path);
    await mkdir(dirname(hostPath), { recursive: true });
    await writeFile(hostPath, Buffer.from(file.raw_value ?? '', 'base64'));
    await chmod(hostPath, file.mode ?? 0o644);
  }
}
