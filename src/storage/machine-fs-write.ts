import { randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lstat, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { HangarError } from '../protocol/errors.ts';
import { at, errno, fsError, isADirectory, ROOT_OWNER, type Owner } from './machine-fs-walk.ts';
import { forgetWrite, recordWrite, TEMP_PREFIX } from './write-journal.ts';

// The one way the daemon puts a file into a machine: the files API's writes and config.files.
//
// The machine owns its file system and may have planted anything at the target: a device node
// (a host disk, /dev/kmsg), a FIFO that would block the writer forever, a socket. So the target
// is never opened. Its type is checked first and anything but a regular file (or nothing) is
// refused (not_a_regular_file, is_a_directory); the bytes go to a new temp file in the same
// directory (O_CREAT|O_EXCL|O_NOFOLLOW: always a fresh regular file), which is fsynced, given its
// owner and mode, and renamed over the target; then the directory is fsynced. A node the machine
// makes at the target after the check is therefore replaced, never written through: rename swaps
// the directory entry without opening what it named. A failed or aborted write removes its temp
// file, so the target is either the old file or the whole new one; one the daemon died before
// removing is found by its record in the write journal (write-journal.ts) and swept later. A
// body that stops sending without closing (a client whose host vanished) counts as dead after
// UPLOAD_IDLE_TIMEOUT_MS, so its temp file does not stay for as long as the connection might.

export const UPLOAD_IDLE_TIMEOUT_MS = 60_000;

export type WriteOptions = {
  /** Mode of the file; default: a replaced file keeps its mode, a new one gets 0644. */
  mode?: number;
  /** Owner of a new file (a replaced file keeps its owner); root by default. */
  owner?: Owner;
  signal?: AbortSignal;
  /** How long the body may send nothing before the write fails; UPLOAD_IDLE_TIMEOUT_MS by default. */
  idleTimeoutMs?: number;
  /** Where the machine's root is mounted, and the directory as the machine sees it: the temp file is journalled. */
  journal?: { rootfs: string; guestDir: string };
};

export type WriteResult = { size: number; mode: number; created: boolean };

/**
 * Writes `body` as `name` in the directory `dir` holds open (see MachineRoot.resolve);
 * `guestPath` names it in errors.
 */
export async function writeFileAt(
  dir: FileHandle,
  name: string,
  guestPath: string,
  body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  opts: WriteOptions = {},
): Promise<WriteResult> {
  const existing = await lstat(at(dir, name)).catch(() => undefined);
  assertWritable(existing, guestPath);
  const replacing = existing?.isFile() ? existing : undefined;
  const mode = opts.mode ?? (replacing ? replacing.mode & 0o7777 : 0o644);
  const owner = replacing ? { uid: replacing.uid, gid: replacing.gid } : (opts.owner ?? ROOT_OWNER);
  const temp = TEMP_PREFIX + randomBytes(6).toString('hex');
  const record = opts.journal ? await recordWrite(opts.journal.rootfs, opts.journal.guestDir, temp) : undefined;
  let fh: FileHandle | undefined;
  let size = 0;
  try {
    fh = await open(at(dir, temp), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    for await (const chunk of untilIdle(body, opts.idleTimeoutMs ?? UPLOAD_IDLE_TIMEOUT_MS, guestPath)) {
      opts.signal?.throwIfAborted();
      await writeAll(fh, chunk);
    }
    opts.signal?.throwIfAborted();
    await fh.chown(owner.uid, owner.gid);
    await fh.chmod(mode); // after chown, which clears set-id bits
    size = (await fh.stat()).size;
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(at(dir, temp), at(dir, name));
  } catch (err) {
    await fh?.close().catch(() => undefined);
    const removed = await unlink(at(dir, temp)).then(() => true, (e: unknown) => errno(e) === 'ENOENT');
    if (record) await forgetWrite(record, removed);
    throw fsError(err, guestPath);
  }
  if (record) await forgetWrite(record);
  // The rename is durable once its directory is; the file is in place either way.
  await dir.sync().catch(() => undefined);
  return { size, mode, created: !replacing };
}

/** Refuses a target that is not a regular file (a missing one is fine). */
function assertWritable(st: Stats | undefined, guestPath: string): void {
  if (!st || st.isFile() || st.isSymbolicLink()) return; // a link here appeared since resolve; rename replaces it
  if (st.isDirectory()) throw isADirectory(guestPath);
  const kind = st.isFIFO() ? 'a FIFO' : st.isSocket() ? 'a socket' : st.isBlockDevice() ? 'a block device' : st.isCharacterDevice() ? 'a character device' : 'not a regular file';
  throw new HangarError('not_a_regular_file', `${guestPath} in the machine is ${kind}; only regular files are written`, {
    hint: `remove it first (DELETE …/files?path=${guestPath}), or write to another path`,
    details: { path: guestPath, type: kind.replace(/^an? /, '') },
  });
}

/** The chunks of `body`, failing once none has come for `idleMs`; a stream body is destroyed then, which ends its upload. */
async function* untilIdle(body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, idleMs: number, guestPath: string): AsyncGenerator<Uint8Array> {
  const it: AsyncIterator<Uint8Array> | Iterator<Uint8Array> = Symbol.asyncIterator in body ? body[Symbol.asyncIterator]() : body[Symbol.iterator]();
  let reading = false;
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          // A stream's iterator answers return() only after its pending read, which never comes.
          (body as Partial<Readable>).destroy?.();
          reject(new HangarError('bad_request', `the upload to ${guestPath} sent nothing for ${idleMs / 1000} s; nothing was written`, {
            hint: 'send it again, keeping the body flowing',
            details: { path: guestPath },
          }));
        }, idleMs);
      });
      reading = true;
      const next = await Promise.race([it.next(), idle]).finally(() => clearTimeout(timer));
      reading = false;
      if (next.done) return;
      yield next.value;
    }
  } finally {
    // The writer stopped early (an error, an abort): close the body as for-await would.
    if (!reading) await it.return?.();
  }
}

/** Writes all of `chunk` (a write may be short, e.g. when interrupted). */
export async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  for (let done = 0; done < chunk.length; ) done += (await fh.write(chunk, done, chunk.length - done)).bytesWritten;
}
