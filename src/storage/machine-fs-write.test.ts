import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { isHangarError } from '../protocol/errors.ts';
import { MachineRoot } from './machine-fs-walk.ts';
import { writeFileAt } from './machine-fs-write.ts';

// The write path against a body that stops sending without ending, as an upload does when the
// client's host vanishes (no FIN ever comes): the write must give up and leave no temp file.

describe('a stalled upload', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'hangar-write-'));
  });
  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  test('fails after the idle timeout, closes the body and removes its temp file', { timeout: 10_000 }, async () => {
    const machine = await MachineRoot.open(root);
    try {
      const r = await machine.resolve('/stalled.bin', { followLast: true });
      const body = new PassThrough();
      body.write(Buffer.alloc(64 * 1024)); // some bytes, then silence
      const started = Date.now();
      await assert.rejects(writeFileAt(r.dir, r.name, '/stalled.bin', body, { idleTimeoutMs: 300 }), (err) => isHangarError(err, 'bad_request') && !!err.hint);
      assert.ok(Date.now() - started < 5_000, 'it gave up on time');
      assert.deepEqual(await readdir(root), [], 'no temp file, no target');
      assert.ok(body.destroyed, 'the body was closed, which ends the upload');
    } finally {
      await machine.close();
    }
  });
});
