import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statfsSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupDataDir, http, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';

// Every machine has a disk of its own (config.rootfs.size_gb, default 8): a machine that writes
// past it gets ENOSPC and nothing more, the host's disk is untouched, and `df /` inside shows
// the machine's size. The disk grows with an update and never shrinks.

const APP = 'disks';
const GIB = 2 ** 30;
let d: TestDaemon;
let dataDir: string;

const sh = (id: string, script: string) => d.client.machines.exec(APP, id, ['sh', '-c', script], { timeoutS: 120 });

/** `df -k /` inside the machine: its size and what is used, in bytes. */
async function dfRoot(id: string): Promise<{ size: number; used: number }> {
  const r = await sh(id, 'df -k / | tail -1');
  const [, size, used] = r.stdout.trim().split(/\s+/);
  return { size: Number(size) * 1024, used: Number(used) * 1024 };
}

before(async () => {
  dataDir = await makeDataDir();
  d = await startDaemon(dataDir);
  await d.client.apps.create(APP);
});

after(async () => {
  await d?.kill().catch(() => undefined);
  await cleanupDataDir(dataDir);
});

describe('a machine disk', () => {
  it('is 8 GB unless asked otherwise, as df inside the machine and the API show', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    assert.equal(m.config.rootfs?.size_gb, 8);
    const df = await dfRoot(m.id);
    assert.ok(df.size > 7.5 * GIB && df.size <= 8 * GIB, `df / shows ${df.size} bytes`);
    const got = await d.client.machines.get(APP, m.id);
    assert.equal(got.rootfs?.size_gb, 8);
    assert.equal(got.rootfs?.size_bytes, df.size);
    await d.client.machines.destroy(APP, m.id, { force: true });
  });

  it('ends a write past its size with ENOSPC in the machine, leaving the host disk alone', async () => {
    const hostFreeBefore = freeBytes(d.dataDir);
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, rootfs: { size_gb: 1 } } });
    const flood = await sh(m.id, 'dd if=/dev/zero of=/flood bs=1M count=1500; echo "dd=$?"; sync');
    assert.match(flood.stderr, /No space left on device/);
    assert.match(flood.stdout, /dd=1/);
    const got = await d.client.machines.get(APP, m.id);
    assert.ok(got.rootfs!.used_bytes! > 0.9 * GIB, `used_bytes counts the flood (${got.rootfs!.used_bytes})`);
    assert.ok(got.rootfs!.size_bytes! <= GIB);
    assert.ok(freeBytes(d.dataDir) > hostFreeBefore - 1.2 * GIB, 'the host lost at most what the disk holds');
    const freed = await sh(m.id, 'rm /flood && echo ok > /more && cat /more');
    assert.equal(freed.stdout.trim(), 'ok', 'space comes back when the machine deletes');
    assert.ok((await d.client.machines.get(APP, m.id)).rootfs!.used_bytes! < 100 * 2 ** 20);
    assert.equal((await http(d, 'GET', '/health')).status, 200);
    await d.client.machines.destroy(APP, m.id, { force: true });
  });

  it('grows with an update (a started machine restarts on it), keeps its files, and refuses to shrink', async () => {
    const config = { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, rootfs: { size_gb: 1 } };
    const m = await d.client.machines.create(APP, { config });
    await sh(m.id, 'echo kept > /note');
    const grown = await d.client.machines.update(APP, m.id, { config: { ...config, rootfs: { size_gb: 3 } } });
    assert.equal(grown.config.rootfs?.size_gb, 3);
    const df = await dfRoot(m.id);
    assert.ok(df.size > 2.5 * GIB && df.size <= 3 * GIB, `df / shows ${df.size} bytes after growing`);
    assert.equal((await sh(m.id, 'cat /note')).stdout.trim(), 'kept');
    // Left out, the size stays what it is.
    const same = await d.client.machines.update(APP, m.id, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    assert.equal(same.config.rootfs?.size_gb, 3);
    const shrink = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}`, { config: { ...config, rootfs: { size_gb: 2 } } });
    assert.equal(shrink.status, 422);
    assert.equal(shrink.body.code, 'rootfs_cannot_shrink');
    assert.match(shrink.body.hint, /3 or more/);
    const bad = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: { ...config, rootfs: { size_gb: 0 } } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, 'validation_failed');
    await d.client.machines.destroy(APP, m.id, { force: true });
  });

  it('keeps its files across a stop, a daemon restart and a start; destroy frees it', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, rootfs: { size_gb: 2 } } });
    await sh(m.id, 'head -c 10485760 /dev/urandom > /blob && md5sum /blob > /blob.md5');
    await d.client.machines.stop(APP, m.id);
    await d.stop();
    d = await startDaemon(dataDir);
    await d.client.machines.start(APP, m.id);
    assert.equal((await sh(m.id, 'md5sum -c /blob.md5')).exit_code, 0);
    const disks = join(d.dataDir, 'storage');
    assert.ok((await findFiles(disks)).some((f) => f.endsWith(`${m.id}.ext4`)), 'the disk image is in the storage pool');
    await d.client.machines.destroy(APP, m.id, { force: true });
    assert.ok(!(await findFiles(disks)).some((f) => f.endsWith(`${m.id}.ext4`)), 'destroy removed the disk image');
    assert.ok(!existsSync(join(d.dataDir, 'machines', m.id)));
  });

  it('is made ahead: the next create of a size gets one already mounted; a daemon that stops or dies leaves no loop device of it', async () => {
    const ready = join(d.dataDir, 'storage', 'pool', 'ready');
    const config = { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, rootfs: { size_gb: 3 } };
    const readyDisks = () => (existsSync(ready) ? readdirSync(ready).filter((f) => f.startsWith('ext4-3g-')) : []);
    await d.client.machines.create(APP, { config, skip_launch: true });
    const [made] = await waitFor(async () => (readyDisks().length === 1 && loopBackings(ready).length === 1 ? readyDisks() : undefined), 10_000, 'a 3 GB disk made ahead');
    const asked = Date.now();
    const m = await d.client.machines.create(APP, { config });
    assert.ok(!readyDisks().includes(made!), 'the create took the disk made ahead');
    const image = join(d.dataDir, 'storage', 'pool', 'disks', `${m.id}.ext4`);
    assert.equal(loopBackings(join(d.dataDir, 'storage', 'pool', 'disks')).filter((l) => l.file === image).length, 1, "a loop device backs the machine's disk");
    const upper = statSync(join(d.dataDir, 'machines', m.id, 'disk', 'upper'));
    assert.ok(upper.birthtimeMs > 0 && upper.birthtimeMs < asked, `its writable layer's directory was made ahead (${upper.birthtimeMs} < ${asked})`);
    const df = await dfRoot(m.id);
    assert.ok(df.size > 2.8 * GIB && df.size <= 3 * GIB, `df / shows ${df.size} bytes`);
    assert.equal((await sh(m.id, 'echo kept > /kept && cat /kept')).stdout.trim(), 'kept');
    const next = await waitFor(async () => (readyDisks().length === 1 ? readyDisks()[0] : undefined), 10_000, 'the next disk made ahead');

    // Killed: its descriptors go, and with them the mount made ahead and its loop device.
    await d.kill();
    await waitFor(async () => (loopBackings(ready).length === 0 ? true : undefined), 10_000, 'no loop device left on a disk made ahead');
    d = await startDaemon(dataDir);
    await d.client.machines.create(APP, { config, skip_launch: true });
    await waitFor(async () => (readyDisks().length === 1 && readyDisks()[0] !== next ? true : undefined), 10_000, 'the killed daemon\'s disk swept, a new one made');
    assert.equal((await sh(m.id, 'cat /kept')).stdout.trim(), 'kept', 'the machine that took one keeps its files');

    await d.stop();
    assert.deepEqual({ files: readyDisks(), loops: loopBackings(ready) }, { files: [], loops: [] }, 'a daemon that stops removes what it made ahead');
    d = await startDaemon(dataDir);
  });
});

/** The loop devices reading and writing files under `dir`, with their files as the kernel records them. */
function loopBackings(dir: string): Array<{ device: string; file: string }> {
  return readdirSync('/sys/block')
    .filter((n) => n.startsWith('loop'))
    .map((device) => {
      try {
        return { device, file: readFileSync(`/sys/block/${device}/loop/backing_file`, 'utf8').trim().replace(/ \(deleted\)$/, '') };
      } catch {
        return { device, file: '' }; // not set up
      }
    })
    .filter((l) => l.file.startsWith(`${dir}/`));
}

function freeBytes(path: string): number {
  const s = statfsSync(path);
  return s.bavail * s.bsize;
}

async function findFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}
