// Idmapped bind mounts (Linux ≥ 5.12): a view of a directory in which every owner is shifted into a
// machine's host uid range, so one copy of an image's root-owned layers serves every machine as its
// own root's files (mount-api.ts makes the calls). A user namespace carrying the mapping is
// needed only while the mount is made: the mount keeps its own reference.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { closeSync, openSync, readlinkSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { HangarError } from '../protocol/errors.ts';
import { attachMount, cloneTree, MOUNT_ATTR_IDMAP, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MountCallFailed, setTreeAttrs } from './mount-api.ts';

/** A machine's id range on the host: inside, 0..size-1; on the host, base..base+size-1. */
export type IdRange = { base: number; size: number };

function failed(err: unknown): HangarError {
  const errno = err instanceof MountCallFailed ? err.errno : undefined;
  return new HangarError('host_unsupported', (err as Error).message, {
    hint: 'machines need idmapped mounts: Linux 5.19 or newer with overlayfs, and glibc 2.36 or newer',
    details: { errno },
    cause: err,
  });
}

/**
 * Mounts a read-only, nodev, nosuid-free view of `source` at `target` in which host id N shows as
 * range.base + N. Set-id bits stay usable: a setuid-root binary in an image runs as the machine's root.
 */
export async function mountIdmapped(source: string, target: string, range: IdRange): Promise<void> {
  await mkdir(target, { recursive: true });
  const userns = await holdUserNamespace(range);
  let tree = -1;
  try {
    tree = cloneTree(source, { recursive: true });
    setTreeAttrs(tree, { set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV, clear: MOUNT_ATTR_NOSUID, usernsFd: userns.fd });
    attachMount(tree, target);
  } catch (err) {
    throw failed(err);
  } finally {
    if (tree >= 0) closeSync(tree);
    userns.close();
  }
}

/**
 * A user namespace with `range` as its uid and gid map, held open by a child until close(). Node
 * cannot unshare a user namespace itself (it is multithreaded), so a child does; it is forked
 * ahead, as the last mount ends, so a create does not wait for one (the map is written at use).
 */
async function holdUserNamespace(range: IdRange): Promise<{ fd: number; close(): void }> {
  const taken = spareHolder ?? forkHolder();
  spareHolder = undefined;
  let child: ChildProcess | undefined;
  try {
    child = await taken.catch(() => forkHolder());
    // A spare that died waiting (someone killed it) is replaced.
    if (child.exitCode !== null || child.signalCode !== null) child = await forkHolder();
    const map = `0 ${range.base} ${range.size}\n`;
    writeFileSync(`/proc/${child.pid}/uid_map`, map);
    writeFileSync(`/proc/${child.pid}/gid_map`, map);
    const fd = openSync(`/proc/${child.pid}/ns/user`, 'r');
    const holder = child;
    return {
      fd,
      close: () => {
        closeSync(fd);
        endHolder(holder);
        // A moment later: the fork blocks this loop for milliseconds, which the create under way would pay.
        setTimeout(() => {
          if (spareHolder) return;
          const next = forkHolder();
          spareHolder = next;
          next.catch(() => {
            if (spareHolder === next) spareHolder = undefined;
          });
        }, SPARE_DELAY_MS).unref();
      },
    };
  } catch (err) {
    if (child) endHolder(child);
    throw new HangarError('host_unsupported', `cannot make a user namespace: ${(err as Error).message}`, {
      hint: 'install util-linux (unshare) and allow user namespaces (sysctl user.max_user_namespaces > 0)',
      cause: err,
    });
  }
}

let spareHolder: Promise<ChildProcess> | undefined;
const SPARE_DELAY_MS = 50;

/**
 * `unshare --user cat`, once its namespace exists. cat ends at the end of its stdin, a pipe from
 * this process: a holder never outlives the daemon, even one killed by -9.
 */
async function forkHolder(): Promise<ChildProcess> {
  const child = spawn('unshare', ['--user', 'cat'], { stdio: ['pipe', 'ignore', 'ignore'] });
  child.unref();
  (child.stdin as Socket).unref();
  child.stdin!.on('error', () => {});
  try {
    const ours = readlinkSync('/proc/self/ns/user');
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    // The namespace exists once unshare has made it and exec'd cat; until then the link is ours.
    for (let i = 0; ; i++) {
      const link = readlinkOrEmpty(`/proc/${child.pid}/ns/user`);
      if (link && link !== ours) return child;
      if (child.exitCode !== null || i > 500) throw new Error('unshare --user did not make a user namespace');
      await new Promise((r) => setTimeout(r, 1));
    }
  } catch (err) {
    endHolder(child);
    throw err;
  }
}

function endHolder(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

function readlinkOrEmpty(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return '';
  }
}
