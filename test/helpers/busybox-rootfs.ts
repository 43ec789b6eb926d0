// A minimal root filesystem for runtime tests: static busybox with its applets, root and a user 1000.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BUSYBOX = '/bin/busybox';

export type TempRootfs = { path: string; remove(): void };

export function makeBusyboxRootfs(parent = tmpdir()): TempRootfs {
  const path = mkdtempSync(join(parent, 'hangar-rootfs-'));
  // mkdtemp makes it 0700; non-root machine users must be able to walk it.
  chmodSync(path, 0o755);
  for (const dir of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'mnt', 'root', 'home/user']) {
    mkdirSync(join(path, dir), { recursive: true });
  }
  copyFileSync(BUSYBOX, join(path, 'bin/busybox'));
  const applets = execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const applet of applets) {
    if (applet !== 'busybox') symlinkSync('busybox', join(path, 'bin', applet));
  }
  writeFileSync(join(path, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n');
  writeFileSync(join(path, 'etc/group'), 'root:x:0:\nwheel:x:10:user\nuser:x:1000:\nstaff:x:50:user,root\n');
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}
