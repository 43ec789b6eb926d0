import assert from 'node:assert/strict';
import { mkdtemp, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isHangarError } from '../protocol/errors.ts';
import { createImageService } from './index.ts';

// hangar/busybox is built on this host from /bin/busybox, no registry involved.

describe('base images', () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'hangar-base-'));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('hangar/busybox builds in a few seconds into a usable root filesystem', async () => {
    const svc = createImageService({ root: join(work, 'store') });
    const t = performance.now();
    const image = await svc.ensure('hangar/busybox');
    const ms = performance.now() - t;
    console.log(`hangar/busybox build ${ms.toFixed(0)} ms`);
    assert.ok(ms < 5000, `took ${ms} ms`);
    assert.equal(image.name, 'hangar/busybox:latest');
    assert.deepEqual(image.config.Cmd, ['/bin/sh']);
    assert.equal(image.layerDirs.length, 1);
    const root = image.layerDirs[0] as string;
    assert.equal(await readlink(join(root, 'bin/sh')), '/bin/busybox');
    const bb = await stat(join(root, 'bin/busybox'));
    assert.equal(bb.size, (await stat('/bin/busybox')).size);
    assert.equal(bb.mode & 0o777, 0o755);
    assert.match(await readFile(join(root, 'etc/passwd'), 'utf8'), /^root:x:0:0:/m);
    assert.match(await readFile(join(root, 'etc/passwd'), 'utf8'), /^nobody:/m);
    assert.equal((await stat(join(root, 'tmp'))).mode & 0o7777, 0o1777);
    for (const d of ['proc', 'sys', 'dev', 'root']) assert.ok((await stat(join(root, d))).isDirectory(), d);

    // The same host makes the same bytes, so a rebuild keeps the same digest and layer.
    const again = await svc.pull('hangar/busybox:latest');
    assert.equal(again.manifestDigest, image.manifestDigest);
    assert.deepEqual(await svc.get('hangar/busybox'), again);
  });

  test('an unknown hangar/* name is image_not_found', async () => {
    const svc = createImageService({ root: join(work, 'store') });
    await assert.rejects(svc.ensure('hangar/nothing'), (err) => isHangarError(err, 'image_not_found'));
    await assert.rejects(svc.ensure('hangar/debian:potato'), (err) => isHangarError(err, 'image_not_found') && /hangar\/debian:trixie/.test(err.hint ?? ''));
    await assert.rejects(svc.ensure('hangar/nothing'), (err) => isHangarError(err, 'image_not_found') && /hangar\/debian:bookworm \(or hangar\/debian\), hangar\/debian:trixie/.test(err.hint ?? ''));
  });
});
