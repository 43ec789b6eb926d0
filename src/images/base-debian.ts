import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { HangarError } from '../protocol/errors.ts';
import type { ImageRunConfig } from './image-service.ts';

// `hangar/debian:<suite>`: a minbase debootstrap of Debian, without apt's caches and lists (they
// are stale at once and a third of the size). Needs the network to reach the Debian mirror.

export const DEBIAN_MIRROR = 'http://deb.debian.org/debian';
const SUITES = ['bookworm', 'trixie'];
const DEBOOTSTRAP_SCRIPTS = '/usr/share/debootstrap/scripts';

export const DEBIAN_CONFIG: ImageRunConfig = {
  Cmd: ['/bin/bash'],
  Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
};

/** The Debian suites this host's debootstrap can build. */
function buildableSuites(): string[] {
  return SUITES.filter((s) => existsSync(join(DEBOOTSTRAP_SCRIPTS, s)));
}

/** Every base image this host can build, for hints. */
export function baseImageNames(): string[] {
  return ['hangar/busybox', ...buildableSuites().map((s) => `hangar/debian:${s}${s === 'bookworm' ? ' (or hangar/debian)' : ''}`)];
}

export function debianSuite(tag: string): string {
  if (!buildableSuites().includes(tag)) {
    throw new HangarError('image_not_found', `hangar/debian:${tag} is not a base image Hangar can build`, {
      hint: `use one of: ${baseImageNames().join(', ')}`,
    });
  }
  return tag;
}

async function runLogged(cmd: string, args: string[], onLine: (line: string) => void, signal?: AbortSignal): Promise<void> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], signal });
  const tail: string[] = [];
  const collect = (line: string) => {
    tail.push(line);
    if (tail.length > 20) tail.shift();
    onLine(line);
  };
  createInterface({ input: child.stdout }).on('line', collect);
  createInterface({ input: child.stderr }).on('line', collect);
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) {
    throw new HangarError('internal', `${cmd} failed (exit ${code}): ${tail.slice(-5).join(' | ')}`, {
      hint: `check network access to ${DEBIAN_MIRROR} and that ${cmd} is installed, then retry`,
    });
  }
}

/** A user's uid in the tree's /etc/passwd. */
async function uidOf(root: string, user: string): Promise<number | undefined> {
  const passwd = await readFile(join(root, 'etc/passwd'), 'utf8').catch(() => '');
  const uid = passwd.split('\n').find((l) => l.startsWith(`${user}:`))?.split(':')[2];
  return uid === undefined ? undefined : Number.parseInt(uid, 10);
}

/** Runs debootstrap into a temp dir under `workDir` and returns a tar stream of the tree. */
export async function debianTar(
  suite: string,
  workDir: string,
  onLine: (line: string) => void,
  signal?: AbortSignal,
): Promise<{ tar: Readable; finished: Promise<void>; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(workDir, '.debootstrap-'));
  const cleanup = async () => {
    // debootstrap mounts proc/sys inside the target; never recurse into a live mount.
    const mounts = await readFile('/proc/self/mounts', 'utf8');
    if (mounts.includes(` ${dir}/`)) await runLogged('umount', ['-R', dir], () => {}).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await runLogged('debootstrap', ['--variant=minbase', suite, dir, DEBIAN_MIRROR], onLine, signal);
    // Emptied, and made again as the Debian package makes them: apt downloads into `partial` as
    // _apt, and warns at every run (then downloads as root) when _apt cannot write there.
    const aptUid = await uidOf(dir, '_apt');
    for (const sub of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
      await rm(join(dir, sub), { recursive: true, force: true });
      await mkdir(join(dir, sub), { recursive: true, mode: 0o755 });
      await mkdir(join(dir, sub, 'partial'), { mode: 0o700 });
      if (aptUid !== undefined) await chown(join(dir, sub, 'partial'), aptUid, 0);
    }
    await rm(join(dir, 'var/cache/apt/pkgcache.bin'), { force: true });
    // mkdtemp made the tree's root 0700; it becomes the machine's `/`.
    await chmod(dir, 0o755);
    await rm(join(dir, 'var/cache/apt/srcpkgcache.bin'), { force: true });
  } catch (err) {
    await cleanup();
    throw err;
  }
  // The archive is written by GNU tar; Hangar's own unpacker reads it back like any pulled layer.
  const child = spawn('tar', ['--create', '--numeric-owner', '--xattrs', '--xattrs-include=*', '--sort=name', '-C', dir, '.'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    signal,
  });
  const finished = once(child, 'close').then(([code]) => {
    if (code !== 0) throw new HangarError('internal', `tar of the debootstrap tree failed (exit ${code})`, { hint: 'see the daemon log' });
  });
  return { tar: child.stdout, finished, cleanup };
}
