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
// held-open directories, so nothing outside the machine is reached. An entry naming an app secret
// (secret_name, Fly's field) gets the secret's placeholder, never its value.

/** An app secret's name to its placeholder. */
export type Placeholders = Record<string, string>;

/** Validates every files[] entry up front so a bad path fails the request before any work. */
export function validateFiles(files: MachineConfig['files'], secretNames: Set<string>): void {
  for (const file of files ?? []) {
    validateGuestPath(file.guest_path);
    if ((file.raw_value === undefined) === (file.secret_name === undefined)) {
      throw new HangarError('validation_failed', `file ${file.guest_path} needs either raw_value or secret_name`, {
        hint: "set raw_value to the base64 contents, or secret_name to one of the app's secrets (the file then holds its placeholder)",
        details: { path: file.guest_path },
      });
    }
    if (file.secret_name !== undefined && !secretNames.has(file.secret_name)) throw noSecret(file.guest_path, file.secret_name);
  }
}

function noSecret(path: string, name: string): HangarError {
  return new HangarError('secret_not_found', `file ${path} names secret ${name}, which the app does not have`, {
    hint: 'set it first with POST /v1/apps/{app}/secrets (`hangar secrets set`), or list them with GET /v1/apps/{app}/secrets',
    details: { path },
  });
}

/** Writes each entry (mode `mode`, default 0644); new files and directories go to `owner`. */
export async function writeMachineFiles(rootfs: string, files: MachineConfig['files'], owner: Owner = ROOT_OWNER, placeholders: Placeholders = {}): Promise<void> {
  if (!files?.length) return;
  const root = await MachineRoot.open(rootfs);
  try {
    for (const file of files) {
      const r = await root.resolve(file.guest_path, { followLast: true, createParents: true, owner, chroot: true });
      if (r.name === '') throw isADirectory(file.guest_path);
      const placeholder = file.secret_name === undefined ? undefined : placeholders[file.secret_name];
      if (file.secret_name !== undefined && placeholder === undefined) throw noSecret(file.guest_path, file.secret_name);
      const bytes = placeholder === undefined ? Buffer.from(file.raw_value ?? '', 'base64') : Buffer.from(placeholder);
      const journal = { rootfs, guestDir: posix.dirname(r.guestPath) };
      await writeFileAt(r.dir, r.name, file.guest_path, [bytes], { mode: file.mode ?? 0o644, owner, journal });
    }
  } finally {
    await root.close();
  }
}
