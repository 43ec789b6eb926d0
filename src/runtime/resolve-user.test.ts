import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { makeBusyboxRootfs } from '../../test/helpers/busybox-rootfs.ts';
import { isHangarError } from '../protocol/errors.ts';
import { resolveUser } from './resolve-user.ts';

function rootfs(t: TestContext) {
  const r = makeBusyboxRootfs();
  t.after(() => r.remove());
  return r.path;
}

describe('resolveUser', () => {
  it('defaults to root with its supplementary groups', async (t) => {
    assert.deepEqual(await resolveUser(rootfs(t), ''), { uid: 0, gid: 0, additionalGids: [50] });
  });

  it('resolves names and numbers', async (t) => {
    const root = rootfs(t);
    assert.deepEqual(await resolveUser(root, 'user'), { uid: 1000, gid: 1000, additionalGids: [10, 50] });
    assert.deepEqual(await resolveUser(root, '1000'), { uid: 1000, gid: 1000, additionalGids: [10, 50] });
    assert.deepEqual(await resolveUser(root, '1000:50'), { uid: 1000, gid: 50, additionalGids: [] });
    assert.deepEqual(await resolveUser(root, 'user:wheel'), { uid: 1000, gid: 10, additionalGids: [] });
    assert.deepEqual(await resolveUser(root, '4242'), { uid: 4242, gid: 0, additionalGids: [] });
    assert.deepEqual(await resolveUser(root, '4242:4343'), { uid: 4242, gid: 4343, additionalGids: [] });
  });

  it('rejects unknown names with a hint', async (t) => {
    const root = rootfs(t);
    await assert.rejects(resolveUser(root, 'nobody'), (err) => isHangarError(err, 'validation_failed') && !!err.hint);
    await assert.rejects(resolveUser(root, 'user:nogroup'), (err) => isHangarError(err, 'validation_failed'));
  });

  it('never reads a host file through a symlinked /etc/passwd', async (t) => {
    const root = rootfs(t);
    const host = mkdtempSync(join(tmpdir(), 'hangar-host-'));
    t.after(() => rmSync(host, { recursive: true, force: true }));
    writeFileSync(join(host, 'passwd'), 'eve:x:4242:4242::/:/bin/sh\n');
    const passwd = join(root, 'etc/passwd');
    for (const target of [join(host, 'passwd'), `../../../../../../../..${host}/passwd`]) {
      unlinkSync(passwd);
      symlinkSync(target, passwd);
      // Resolved inside the rootfs, the link points at nothing: eve stays unknown.
      await assert.rejects(resolveUser(root, 'eve'), (err) => isHangarError(err, 'validation_failed'));
      assert.deepEqual(await resolveUser(root, '4242'), { uid: 4242, gid: 0, additionalGids: [] });
    }
  });

  it('follows symlinks that stay inside the rootfs, as the machine would', async (t) => {
    const root = rootfs(t);
    mkdirSync(join(root, 'usr/lib'), { recursive: true });
    writeFileSync(join(root, 'usr/lib/passwd'), 'app:x:501:502::/:/bin/sh\n');
    unlinkSync(join(root, 'etc/passwd'));
    symlinkSync('/usr/lib/passwd', join(root, 'etc/passwd'));
    assert.deepEqual(await resolveUser(root, 'app'), { uid: 501, gid: 502, additionalGids: [] });
  });

  it('refuses symlink loops and non-regular files', async (t) => {
    const root = rootfs(t);
    unlinkSync(join(root, 'etc/passwd'));
    symlinkSync('/etc/passwd', join(root, 'etc/passwd'));
    await assert.rejects(resolveUser(root, 'user'), (err) => isHangarError(err, 'path_escapes_root'));
    unlinkSync(join(root, 'etc/passwd'));
    mkdirSync(join(root, 'etc/passwd'));
    await assert.rejects(resolveUser(root, 'user'), (err) => isHangarError(err, 'unsupported_image'));
  });
});
