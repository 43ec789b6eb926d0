import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { withDaemon, http, HANGAR, type TestDaemon } from './helpers/daemon.ts';

// Volumes as a robot uses them: storage that outlives its machines, moves between them (whatever
// their id ranges), grows while in use, is snapshotted and copied; and is carried by a machine's
// checkpoints and forks. Through REST, the SDK and the CLI.

const APP = 'vols';
const GIB = 2 ** 30;
let d: TestDaemon & { close(): Promise<void> };

const sh = (id: string, script: string) => d.client.machines.exec(APP, id, ['sh', '-c', script], { timeoutS: 120 });
const withVolume = (volume: string, path = '/data') => ({
  image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, rootfs: { size_gb: 1 }, mounts: [{ volume, path }],
});

function hangar(...args: string[]) {
  const r = spawnSync(HANGAR, args, { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: d.dataDir, HANGAR_APP: APP }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `df -k PATH` inside the machine: its size in bytes. */
async function dfSize(id: string, path: string): Promise<number> {
  const r = await sh(id, `df -k ${path} | tail -1`);
  return Number(r.stdout.trim().split(/\s+/)[1]) * 1024;
}

before(async () => {
  d = await withDaemon();
  await d.client.apps.create(APP);
});

after(async () => {
  await d?.close();
});

describe('volumes', () => {
  it('outlive the machine that wrote them: a new machine mounts the volume and finds the files', async () => {
    const v = await d.client.volumes.create(APP, { name: 'pgdata', size_gb: 1 });
    assert.match(v.id, /^vol_[0-9a-z]{16}$/);
    assert.equal(v.size_gb, 1);
    assert.equal(v.attached_machine_id, undefined);

    const a = await d.client.machines.create(APP, { config: withVolume(v.id) });
    assert.equal((await d.client.volumes.get(APP, v.id)).attached_machine_id, a.id);
    await sh(a.id, 'echo hello > /data/note && mkdir /data/dir && head -c 1048576 /dev/urandom > /data/dir/blob && cd /data && md5sum dir/blob > blob.md5');
    const mount = (await sh(a.id, 'grep " /data " /proc/mounts')).stdout;
    assert.match(mount, /nosuid/, `the volume is nosuid in the machine: ${mount}`);
    assert.match(mount, /nodev/, `the volume is nodev in the machine: ${mount}`);
    const host = readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === join(d.dataDir, 'volumes', v.id));
    assert.match(host ?? '', /^\/dev\/loop\d+ \S+ xfs \S*nosuid,nodev/, `the host's mount of the volume is nodev and nosuid: ${host}`);

    await d.client.machines.destroy(APP, a.id, { force: true });
    const kept = await d.client.volumes.get(APP, v.id);
    assert.equal(kept.attached_machine_id, undefined, 'destroying the machine detaches the volume and keeps it');

    const b = await d.client.machines.create(APP, { config: withVolume(v.id, '/mnt/state') });
    assert.equal((await sh(b.id, 'cat /mnt/state/note')).stdout, 'hello\n');
    assert.equal((await sh(b.id, 'cd /mnt/state && md5sum -c blob.md5')).exit_code, 0);
    await d.client.machines.destroy(APP, b.id, { force: true });
    await d.client.volumes.delete(APP, v.id);
  });

  it('belong to one machine at a time: a second machine asking for an attached volume gets 409 with a hint', async () => {
    const v = await d.client.volumes.create(APP, { name: 'single' });
    const a = await d.client.machines.create(APP, { config: withVolume(v.id) });
    const second = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: withVolume(v.id) });
    assert.equal(second.status, 409);
    assert.equal(second.body.code, 'volume_attached');
    assert.equal(second.body.details.attached_machine_id, a.id);
    assert.match(second.body.hint, /source_volume_id/);
    const del = await http(d, 'DELETE', `/v1/apps/${APP}/volumes/${v.id}`);
    assert.equal(del.status, 409, 'an attached volume is not deleted');
    assert.equal(del.body.code, 'volume_attached');
    const missing = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: withVolume('vol_nosuchvolume00') });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, 'volume_not_found');
    const reserved = await http(d, 'POST', `/v1/apps/${APP}/machines`, { config: withVolume(v.id, '/proc/x') });
    assert.equal(reserved.status, 400);

    // Updated without it, the machine lets it go.
    await d.client.machines.update(APP, a.id, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    assert.equal((await d.client.volumes.get(APP, v.id)).attached_machine_id, undefined);
    await d.client.machines.destroy(APP, a.id, { force: true });
    const gone = await d.client.volumes.delete(APP, v.id);
    assert.equal(gone.state, 'destroyed');
    assert.equal((await http(d, 'GET', `/v1/apps/${APP}/volumes/${v.id}`)).status, 404);
  });

  it('end a write past their size with ENOSPC, and grow while attached: df inside shows it without a restart', async () => {
    const v = await d.client.volumes.create(APP, { name: 'grows', size_gb: 1 });
    const m = await d.client.machines.create(APP, { config: withVolume(v.id) });
    const before = await dfSize(m.id, '/data');
    assert.ok(before > 0.85 * GIB && before <= GIB, `df shows ${before} bytes`);
    const flood = await sh(m.id, 'dd if=/dev/zero of=/data/flood bs=1M count=1500; echo "dd=$?"');
    assert.match(flood.stderr, /No space left on device/);
    assert.match(flood.stdout, /dd=1/);
    await sh(m.id, 'rm /data/flood');

    await sh(m.id, 'echo kept > /data/note');
    const pid = (await sh(m.id, 'cat /proc/1/stat')).stdout;
    const { needs_restart, volume } = await d.client.volumes.extend(APP, v.id, 3);
    assert.equal(needs_restart, false);
    assert.equal(volume.size_gb, 3);
    const after = await dfSize(m.id, '/data');
    assert.ok(after > 2.8 * GIB && after <= 3 * GIB, `df shows ${after} bytes after the extend`);
    assert.equal((await sh(m.id, 'cat /proc/1/stat')).stdout.split(' ')[21], pid.split(' ')[21], 'the machine did not restart');
    assert.equal((await sh(m.id, 'cat /data/note')).stdout, 'kept\n');
    const big = await sh(m.id, 'dd if=/dev/zero of=/data/big bs=1M count=1500 2>&1; echo "dd=$?"; rm -f /data/big');
    assert.match(big.stdout, /dd=0/, 'the new space is usable');
    const shrink = await http(d, 'PUT', `/v1/apps/${APP}/volumes/${v.id}/extend`, { size_gb: 2 });
    assert.equal(shrink.status, 422);
    assert.equal(shrink.body.code, 'volume_cannot_shrink');
    await d.client.machines.destroy(APP, m.id, { force: true });
    await d.client.volumes.delete(APP, v.id);
  });

  it('show their files as root-owned in machines of different id ranges', async () => {
    const v = await d.client.volumes.create(APP, { name: 'shared' });
    const a = await d.client.machines.create(APP, { config: withVolume(v.id) });
    await sh(a.id, 'echo a > /data/by-root && mkdir /data/app && chown 1000:1000 /data/app && touch /data/app/f && chown 1000:1000 /data/app/f');
    const owners = (id: string) => sh(id, 'stat -c "%u:%g %n" /data /data/by-root /data/app /data/app/f').then((r) => r.stdout);
    const expected = '0:0 /data\n0:0 /data/by-root\n1000:1000 /data/app\n1000:1000 /data/app/f\n';
    assert.equal(await owners(a.id), expected);
    const rangeA = (await sh(a.id, 'cat /proc/self/uid_map')).stdout;
    await d.client.machines.destroy(APP, a.id, { force: true });
    const b = await d.client.machines.create(APP, { config: withVolume(v.id) });
    assert.equal(await owners(b.id), expected, 'the same owners in a machine of another range');
    assert.equal((await sh(b.id, 'echo b >> /data/by-root && cat /data/by-root')).stdout, 'a\nb\n', "the machine's root writes root's files");
    assert.notEqual(rangeA, (await sh(b.id, 'cat /proc/self/uid_map')).stdout, 'the two machines have different id ranges');
    await d.client.machines.destroy(APP, b.id, { force: true });
    await d.client.volumes.delete(APP, v.id);
  });

  it('are snapshotted and restored (snapshot_id), and forked (source_volume_id), each copy its own', async () => {
    const v = await d.client.volumes.create(APP, { name: 'origin', size_gb: 2 });
    const m = await d.client.machines.create(APP, { config: withVolume(v.id) });
    await sh(m.id, 'echo v1 > /data/state');
    const snap = await d.client.volumes.snapshots.create(APP, v.id);
    assert.match(snap.id, /^vs_/);
    await sh(m.id, 'echo v2 > /data/state');
    assert.deepEqual((await d.client.volumes.snapshots.list(APP, v.id)).map((s) => s.id), [snap.id]);

    const restored = await d.client.volumes.create(APP, { name: 'restored', snapshot_id: snap.id });
    assert.equal(restored.size_gb, 2, 'a restore is as large as the volume snapshotted');
    // A fork of a volume in use, taken while its machine runs.
    const fork = await d.client.volumes.create(APP, { name: 'forked', source_volume_id: v.id, size_gb: 3 });
    assert.equal(fork.size_gb, 3);
    const r = await d.client.machines.create(APP, { config: { ...withVolume(restored.id, '/r'), mounts: [{ volume: restored.id, path: '/r' }, { volume: fork.id, path: '/f' }] } });
    assert.equal((await sh(r.id, 'cat /r/state /f/state')).stdout, 'v1\nv2\n');
    assert.ok((await dfSize(r.id, '/f')) > 2.8 * GIB, 'the fork has the size asked for');
    await sh(r.id, 'echo fork > /f/state');
    assert.equal((await sh(m.id, 'cat /data/state')).stdout, 'v2\n', 'writing the copy leaves the origin alone');

    const cli = hangar('volumes', 'list');
    assert.equal(cli.code, 0, cli.stderr);
    for (const id of [v.id, restored.id, fork.id]) assert.match(cli.stdout, new RegExp(id));
    for (const machine of [m.id, r.id]) await d.client.machines.destroy(APP, machine, { force: true });
    for (const id of [v.id, restored.id, fork.id]) await d.client.volumes.delete(APP, id);
  });

  it("are part of a machine's checkpoints (a restore rolls the volume back) and forks (each fork gets its own copy)", async () => {
    const v = await d.client.volumes.create(APP, { name: 'ckpt' });
    const m = await d.client.machines.create(APP, { config: withVolume(v.id) });
    await sh(m.id, 'echo good > /data/state && echo good > /disk-state');
    const c = await d.client.checkpoints.create(APP, m.id, { name: 'good' });
    assert.deepEqual(c.volumes, [v.id], 'the checkpoint names the volumes it captured');
    await sh(m.id, 'echo broken > /data/state && echo broken > /disk-state');
    await d.client.checkpoints.restore(APP, m.id, c.id);
    assert.equal((await sh(m.id, 'cat /data/state /disk-state')).stdout, 'good\ngood\n', 'the volume rolled back with the disk');
    assert.equal((await d.client.volumes.get(APP, v.id)).attached_machine_id, m.id);

    await sh(m.id, 'echo now > /data/state');
    const { machines: forks } = await d.client.machines.fork(APP, m.id, { count: 2 });
    const volumes = forks.map((f) => f.config.mounts![0]!.volume);
    assert.equal(new Set([v.id, ...volumes]).size, 3, 'each fork mounts a new volume');
    for (const [i, f] of forks.entries()) {
      assert.equal((await d.client.volumes.get(APP, volumes[i]!)).attached_machine_id, f.id);
      assert.equal((await sh(f.id, 'cat /data/state')).stdout, 'now\n');
      await sh(f.id, `echo fork${i} > /data/state`);
    }
    assert.equal((await sh(forks[0]!.id, 'cat /data/state')).stdout, 'fork0\n');
    assert.equal((await sh(m.id, 'cat /data/state')).stdout, 'now\n', "a fork's writes stay its own");
    const fromCheckpoint = await d.client.machines.fork(APP, m.id, { checkpoint: 'good' });
    assert.equal((await sh(fromCheckpoint.machines[0]!.id, 'cat /data/state')).stdout, 'good\n', "a fork of a checkpoint gets the checkpoint's volume");

    for (const f of [...forks, ...fromCheckpoint.machines, m]) await d.client.machines.destroy(APP, f.id, { force: true });
    for (const id of [v.id, ...volumes, fromCheckpoint.machines[0]!.config.mounts![0]!.volume]) await d.client.volumes.delete(APP, id);
  });

  it('are made, grown, snapshotted, shown and destroyed from the CLI', async () => {
    const created = hangar('volumes', 'create', 'clidata', '--size', '1', '--json');
    assert.equal(created.code, 0, created.stderr);
    const id = JSON.parse(created.stdout).id as string;
    const m = hangar('machines', 'run', 'hangar/busybox', '--volume', `${id}:/data`, '--json', '--', 'sleep', '3600');
    assert.equal(m.code, 0, m.stderr);
    const machine = JSON.parse(m.stdout).id as string;
    const extended = hangar('volumes', 'extend', id, '--size', '2');
    assert.equal(extended.code, 0, extended.stderr);
    assert.match(extended.stdout, new RegExp(`${id}  clidata  2 GB  attached to ${machine}`));
    const snap = hangar('volumes', 'snapshot', id);
    assert.equal(snap.code, 0, snap.stderr);
    const snapshotId = snap.stdout.split(/\s+/)[0]!;
    assert.match(hangar('volumes', 'snapshots', id).stdout, new RegExp(snapshotId));
    assert.match(hangar('volumes', 'show', id).stdout, /MiB used of \d+ MiB/);
    const refused = hangar('volumes', 'destroy', id);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /code: volume_attached/);
    await d.client.machines.destroy(APP, machine, { force: true });
    const destroyed = hangar('volumes', 'destroy', id);
    assert.equal(destroyed.code, 0, destroyed.stderr);
    assert.match(destroyed.stdout, /destroyed vol_/);
  });
});
