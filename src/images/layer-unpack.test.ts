import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import tar from 'tar-stream';
import { isHangarError } from '../protocol/errors.ts';
import { writeLayout, type TarEntry } from '../../test/helpers/oci-layout.ts';
import { pushLayout, startRegistry, type TestRegistry } from '../../test/helpers/registry.ts';
import { createImageService } from './index.ts';

// Layer contents end to end: pushed to a real registry, pulled, unpacked, and for whiteouts
// stacked with a real overlay mount the way a machine's root filesystem is.

const run = promisify(execFile);

describe('layer unpack', () => {
  let registry: TestRegistry;
  let work: string;
  let n = 0;
  const pushAndPull = async (layers: TarEntry[][]) => {
    const name = `t/unpack${n++}`;
    const dir = join(work, name.replace('/', '-'));
    await writeLayout(dir, 'v1', { layers: layers.map((entries) => ({ entries, compression: 'gzip' as const })) });
    await pushLayout(dir, `${registry.host}/${name}:v1`, { tag: 'v1' });
    const root = await mkdtemp(join(work, 'store-'));
    const svc = createImageService({ root, insecureRegistries: [registry.host] });
    return { root, pull: () => svc.pull(`${registry.host}/${name}:v1`) };
  };

  before(async () => {
    registry = await startRegistry();
    work = await mkdtemp(join(tmpdir(), 'hangar-unpack-'));
  });
  after(async () => {
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('whiteouts and opaque dirs hide lower content under a real overlay mount', async () => {
    const { pull } = await pushAndPull([
      [
        { name: 'data/', type: 'directory' },
        { name: 'data/gone.txt', content: 'deleted above' },
        { name: 'data/kept.txt', content: 'kept' },
        { name: 'opq/', type: 'directory' },
        { name: 'opq/old.txt', content: 'hidden by opaque' },
      ],
      [
        { name: 'data/', type: 'directory' },
        { name: 'data/.wh.gone.txt' },
        { name: 'opq/', type: 'directory', mode: 0o750 },
        { name: 'opq/.wh..wh..opq' },
        { name: 'opq/new.txt', content: 'new' },
      ],
    ]);
    const image = await pull();
    const upper = image.layerDirs[1] as string;
    const wh = await lstat(join(upper, 'data/gone.txt'));
    assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'a whiteout is a 0:0 character device');
    await assert.rejects(lstat(join(upper, 'data/.wh.gone.txt')));
    await assert.rejects(lstat(join(upper, 'opq/.wh..wh..opq')));
    assert.equal((await stat(join(upper, 'opq'))).mode & 0o7777, 0o750);

    const mnt = join(work, 'mnt');
    await mkdir(mnt);
    // overlayfs lists lowerdirs top first.
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${[...image.layerDirs].reverse().join(':')}`, mnt]);
    try {
      assert.deepEqual((await readdir(join(mnt, 'data'))).sort(), ['kept.txt']);
      assert.deepEqual(await readdir(join(mnt, 'opq')), ['new.txt']);
    } finally {
      await run('umount', [mnt]);
    }
  });

  test('hard links, symlinks, modes, ownership and mtimes are preserved', async () => {
    const mtime = new Date('2020-05-06T07:08:09Z');
    const { pull } = await pushAndPull([
      [
        { name: 'bin/', type: 'directory', mode: 0o711, uid: 7, gid: 8, mtime },
        { name: 'bin/tool', content: '#!/bin/sh\n', mode: 0o4755, uid: 1000, gid: 1001, mtime },
        { name: 'bin/tool-again', type: 'link', linkname: 'bin/tool' },
        { name: 'bin/sh', type: 'symlink', linkname: '/bin/tool', uid: 5, gid: 6 },
        { name: 'bin/rel', type: 'symlink', linkname: '../etc/../bin/tool' },
        { name: 'tmp/', type: 'directory', mode: 0o1777 },
        { name: 'secret', content: 's', mode: 0o600, uid: 33, gid: 44 },
        { name: 'capped', content: 'c', pax: { 'SCHILY.xattr.user.note': 'hello' } },
      ],
    ]);
    const dir = (await pull()).layerDirs[0] as string;
    const tool = await stat(join(dir, 'bin/tool'));
    const again = await stat(join(dir, 'bin/tool-again'));
    assert.equal(tool.ino, again.ino, 'hard links share an inode');
    assert.equal(tool.nlink, 2);
    assert.equal(tool.mode & 0o7777, 0o4755, 'setuid survives chown');
    assert.deepEqual([tool.uid, tool.gid], [1000, 1001]);
    assert.equal(tool.mtimeMs, mtime.getTime());
    assert.equal(await readlink(join(dir, 'bin/sh')), '/bin/tool');
    assert.equal(await readlink(join(dir, 'bin/rel')), '../etc/../bin/tool');
    const sh = await lstat(join(dir, 'bin/sh'));
    assert.deepEqual([sh.uid, sh.gid], [5, 6], 'symlinks are lchown-ed, not their targets');
    const bin = await stat(join(dir, 'bin'));
    assert.equal(bin.mode & 0o7777, 0o711);
    assert.deepEqual([bin.uid, bin.gid], [7, 8]);
    assert.equal(bin.mtimeMs, mtime.getTime(), 'directory mtimes are set after their children');
    assert.equal((await stat(join(dir, 'tmp'))).mode & 0o7777, 0o1777);
    const secret = await stat(join(dir, 'secret'));
    assert.deepEqual([secret.mode & 0o7777, secret.uid, secret.gid], [0o600, 33, 44]);
    assert.equal(await readFile(join(dir, 'capped'), 'utf8'), 'c');
    // Node cannot read xattrs; GNU tar can, and tar-stream reads its PAX records back.
    const { stdout } = await run('tar', ['--create', '--xattrs', '--xattrs-include=user.*', '-C', dir, 'capped'], { encoding: 'buffer' });
    const extract = tar.extract();
    extract.end(stdout);
    let seen = 0;
    for await (const entry of extract) {
      seen++;
      assert.equal((entry.header as { pax?: Record<string, string> }).pax?.['SCHILY.xattr.user.note'], 'hello');
      entry.resume();
    }
    assert.equal(seen, 1);
  });

  const hostile: [string, TarEntry[], RegExp][] = [
    ['a ../ path', [{ name: 'ok/', type: 'directory' }, { name: 'ok/../../escape', content: 'x' }], /"ok\/\.\.\/\.\.\/escape" contains a "\.\."/],
    ['a write through a symlink', [{ name: 'etc', type: 'symlink', linkname: '/etc' }, { name: 'etc/hangar-pwned', content: 'x' }], /"etc\/hangar-pwned" is written through the symlink "etc"/],
    ['a hard link to /etc/passwd', [{ name: 'passwd', type: 'link', linkname: '/etc/passwd' }], /"passwd" is a hard link to "\/etc\/passwd", which is not a file in this layer/],
    ['a hard link with ..', [{ name: 'p', type: 'link', linkname: '../../../../etc/passwd' }], /"p" is a hard link to "\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd", outside the layer/],
  ];
  for (const [what, entries, message] of hostile) {
    test(`a layer with ${what} is refused with unsafe_layer and leaves nothing behind`, async () => {
      const { root, pull } = await pushAndPull([[{ name: 'first', content: 'f' }, ...entries]]);
      await assert.rejects(pull(), (err) => {
        assert.ok(isHangarError(err, 'unsafe_layer'), String(err));
        assert.match(err.message, message);
        return true;
      });
      assert.deepEqual(await readdir(join(root, 'layers')), [], 'no layer or temp dir is left');
      await assert.rejects(stat('/etc/hangar-pwned'));
    });
  }
});
