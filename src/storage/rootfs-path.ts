import { HangarError } from '../protocol/errors.ts';

// A path as a request names it inside a machine: absolute, without '..' or NUL. Resolving it
// against the machine's files is MachineRoot's job (machine-fs-walk.ts).

export function validateGuestPath(guestPath: string): string[] {
  if (!guestPath.startsWith('/')) {
    throw new HangarError('path_escapes_root', `path ${JSON.stringify(guestPath)} is not absolute`, {
      hint: 'give an absolute path inside the machine, such as /etc/app.conf',
      details: { path: guestPath },
    });
  }
  const parts = guestPath.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) {
    throw new HangarError('path_escapes_root', `path ${JSON.stringify(guestPath)} contains '..'`, {
      hint: "use a normalized absolute path without '..' components",
      details: { path: guestPath },
    });
  }
  if (guestPath.includes('\0')) {
    throw new HangarError('path_escapes_root', 'path contains a NUL byte', { hint: 'remove the NUL byte', details: { path: guestPath } });
  }
  return parts;
}
