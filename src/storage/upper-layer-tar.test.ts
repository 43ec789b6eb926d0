import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, chown, link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import tar from 'tar-stream';
import { IdShift } from './id-shift.ts';
import { packUpperLayer } from './upper-layer-tar.ts';

// An upper dir laid out as overlay leaves one (whiteout devices, an opaque directory's xattr),
// packed, and read back member by member.

const BASE = 100000;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hangar-upper-'));
  await mkdir(join(dir, 'etc'));
  execFileSync('mknod', [join(dir, 'etc', 'gone'), 'c', '0', '0']);
  await mkdir(join(dir, 'opq', 'sub'), { recursive: true });
  await writeFile(join(dir, 'opq', 'sub', 'f'), 'x');
  await mkdir(join(dir, 'home'));
  await writeFile(join(dir, 'home', 'a'), 'hi\n');
  await chown(join(dir, 'home', 'a'), BASE + 7, BASE + 8);
  await chmod(join(dir, 'home', 'a'), 0o4755);
  await link(join(dir, 'home', 'a'), join(dir, 'home', 'b'));
  await writeFile(join(dir, 'home', 'secret'), 's');
  await chmod(join(dir, 'home', 'secret'), 0);
  await symlink('/etc/passwd', join(dir, 'home', 'link'));
  execFileSync('python3', ['-c', [
    'import os',
    `os.setxattr('${dir}/opq', 'trusted.overlay.opaque', b'y')`,
    `os.setxattr('${dir}/home/a', 'user.note', b'hello')`,
    `os.setxattr('${dir}/home', 'trusted.overlay.origin', b'xx')`,
    `os.setxattr('${dir}/home/secret', 'security.test', b'\\xff')`,
    // A socket the machine left bound (Node would unlink it on close).
    `import socket; socket.socket(socket.AF_UNIX).bind('${dir}/home/sock')`,
  ].join('\n')]);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('overlay markers become OCI whiteouts; owners, set-id bits, links and user xattrs are kept', async () => {
  const { tar: stream, done } = packUpperLayer(dir, new IdShift(BASE));
  const extract = tar.extract();
  stream.pipe(extract);
  const members = new Map<string, tar.Header & { pax?: Record<string, string> | null }>();
  for await (const entry of extract) {
    members.set(entry.header.name, entry.header as tar.Header & { pax?: Record<string, string> | null });
    entry.resume();
  }
  const summary = await done;
  assert.deepEqual([...members.keys()], [
    'etc/', 'etc/.wh.gone', 'home/', 'home/a', 'home/b', 'home/link', 'home/secret', 'opq/', 'opq/.wh..wh..opq', 'opq/sub/', 'opq/sub/f',
  ]);
  const a = members.get('home/a')!;
  assert.equal(a.mode, 0o4755);
  assert.deepEqual([a.uid, a.gid], [7, 8], 'owners as the machine sees them');
  assert.equal(a.pax?.['SCHILY.xattr.user.note'], 'hello');
  assert.equal(members.get('home/b')!.type, 'link');
  assert.equal(members.get('home/b')!.linkname, 'home/a');
  assert.equal(members.get('home/secret')!.mode, 0, 'mode 000 stays 000');
  assert.equal(members.get('home/link')!.linkname, '/etc/passwd');
  assert.ok(!members.get('home/')!.pax, 'overlay bookkeeping is dropped');
  assert.deepEqual(summary.skipped, [{ path: '/home/sock', type: 'socket' }]);
  assert.equal(summary.droppedXattrs, 1, 'security.* is dropped');
});
