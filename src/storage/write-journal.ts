import { readdirSync } from 'node:fs';
import { mkdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { at, MachineRoot } from './machine-fs-walk.ts';

// A write's temp file lives in the machine until it is renamed into place or removed. A write
// that fails removes it; but if the daemon itself dies in between (kill -9, OOM, a host crash),
// nothing in the machine says whose the file was, and it would stay forever. So every write
// records its temp file before making it, in a journal beside the machine's root mount and
// outside the machine (<machine dir>/pending-writes/<temp name>, holding the directory as the
// machine sees it), and drops the record once the temp file is gone. sweepStaleWrites removes
// the temp files of records no write of this daemon owns; it costs one readdir when there is
// nothing to do, so the runner calls it on every start and every files request.

export const TEMP_PREFIX = '.hangar-write-';

/** Records of writes in flight in this process, which a sweep must leave alone. */
const live = new Set<string>();

function journalDir(rootfs: string): string {
  return join(dirname(rootfs), 'pending-writes');
}

/** Records that `temp` is about to be made in `guestDir`; returns the record, for forgetWrite. */
export async function recordWrite(rootfs: string, guestDir: string, temp: string): Promise<string> {
  const dir = journalDir(rootfs);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const record = join(dir, temp);
  live.add(record);
  await writeFile(record, guestDir);
  return record;
}

/** The write is over; its record goes once its temp file is gone (else a later sweep retries). */
export async function forgetWrite(record: string, tempGone = true): Promise<void> {
  live.delete(record);
  if (tempGone) await rm(record, { force: true });
}

/**
 * Removes temp files that writes of an earlier daemon left in the machine mounted at `rootfs`.
 * Best effort: a record it cannot handle now stays for the next sweep, and nothing is thrown.
 */
export async function sweepStaleWrites(rootfs: string): Promise<number> {
  const dir = journalDir(rootfs);
  let records: string[];
  try {
    // Synchronous: every start makes this call, microseconds where a trip through the thread pool costs a turn of the loop.
    records = readdirSync(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of records) {
    const record = join(dir, name);
    if (live.has(record)) continue;
    try {
      if (name.startsWith(TEMP_PREFIX)) removed += await removeTemp(rootfs, await readFile(record, 'utf8'), name);
      await rm(record, { force: true });
    } catch {
      // another sweep took it, or the journal is unreadable: the next one tries again
    }
  }
  return removed;
}

/** Unlinks `name` in the machine's directory `guestDir`, resolved afresh (the machine may have moved things). */
async function removeTemp(rootfs: string, guestDir: string, name: string): Promise<number> {
  const root = await MachineRoot.open(rootfs);
  try {
    const dir = await root.openDir(await root.resolve(guestDir, { followLast: true }));
    try {
      await unlink(at(dir, name));
      return 1;
    } finally {
      await dir.close();
    }
  } catch {
    return 0; // gone already, or its directory is: nothing left to remove
  } finally {
    await root.close();
  }
}
