import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupDataDir, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';

// kill -9 of the daemon in the middle of a checkpoint, a fork or a commit loses nothing and leaves
// nothing half-made: no disk stays frozen, every checkpoint listed has its image and no image lacks
// its record, a fork is either whole (the source's files) or gone, and so is a committed image.

const APP = 'storage-crash';
const busybox = { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, rootfs: { size_gb: 2 } };
let dataDir: string;
let d: TestDaemon;

const sh = (id: string, script: string) => d.client.machines.exec(APP, id, ['sh', '-c', script], { timeoutS: 20 });
const pool = () => join(dataDir, 'storage', 'pool');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function crashAndRestart(): Promise<void> {
  await d.kill();
  d = await startDaemon(dataDir);
}

/** Every checkpoint the API lists has its image in the pool, and every image there is listed. */
async function assertCheckpointsWhole(machineId: string): Promise<void> {
  const listed = (await d.client.checkpoints.list(APP, machineId)).map((c) => `${c.id}.ext4`).sort();
  const onDisk = (await readdir(join(pool(), 'checkpoints', machineId)).catch(() => [] as string[])).sort();
  assert.deepEqual(onDisk, listed, 'checkpoint records and images match');
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

describe('a daemon killed in the middle of storage work', () => {
  it('thaws a disk it left frozen and sweeps what it half-made', async () => {
    const m = await d.client.machines.create(APP, { config: busybox });
    await sh(m.id, 'echo kept > /kept');
    // As a daemon killed between freeze and thaw leaves it.
    execFileSync('fsfreeze', ['--freeze', join(dataDir, 'machines', m.id, 'disk')]);
    await writeFile(join(pool(), 'disks', `${m.id}.ext4.partial`), 'half');
    await mkdir(join(pool(), 'forks'), { recursive: true });
    await writeFile(join(pool(), 'forks', `${m.id}-0000.ext4`), 'half');
    await mkdir(join(pool(), 'checkpoints', m.id), { recursive: true });
    await writeFile(join(pool(), 'checkpoints', m.id, 'ck000000000000.ext4'), 'no record');
    await crashAndRestart();
    assert.match(d.output(), new RegExp(`storage: thawed the disk of ${m.id}`));
    assert.equal((await sh(m.id, 'echo more >> /kept && cat /kept')).stdout, 'kept\nmore\n', 'the machine writes again');
    assert.ok(!existsSync(join(pool(), 'disks', `${m.id}.ext4.partial`)));
    assert.deepEqual(await readdir(join(pool(), 'forks')).catch(() => []), []);
    await assertCheckpointsWhole(m.id);
    await d.client.machines.destroy(APP, m.id, { force: true });
  });

  it('loses nothing when killed at any point of a checkpoint, a fork or a commit', async () => {
    const src = await d.client.machines.create(APP, {
      config: { ...busybox, init: { cmd: ['sh', '-c', 'echo source > /marker; while true; do head -c 4194304 /dev/urandom > /churn; done'] } },
    });
    for (const delayMs of [0, 5, 15, 40]) {
      const pending = d.client.checkpoints.create(APP, src.id).catch(() => undefined);
      await sleep(delayMs);
      await crashAndRestart();
      await pending;
      assert.equal((await d.client.machines.get(APP, src.id)).state, 'started');
      assert.equal((await sh(src.id, 'cat /marker && echo x > /probe && echo ok')).stdout, 'source\nok\n', `after a crash ${delayMs} ms into a checkpoint`);
      await assertCheckpointsWhole(src.id);
    }
    for (const delayMs of [0, 10, 60]) {
      const pending = d.client.machines.fork(APP, src.id, { count: 2 }).catch(() => undefined);
      await sleep(delayMs);
      await crashAndRestart();
      await pending;
      for (const m of await d.client.machines.list(APP)) {
        if (m.id === src.id) continue;
        if (m.state === 'created' || m.state === 'stopped') await d.client.machines.start(APP, m.id);
        assert.equal((await sh(m.id, 'cat /marker')).stdout, 'source\n', `a fork that survived a crash ${delayMs} ms in is whole`);
        await d.client.machines.destroy(APP, m.id, { force: true });
      }
      assert.deepEqual(await readdir(join(pool(), 'forks')).catch(() => []), [], 'no fork snapshot is left');
    }
    for (const [i, delayMs] of [0, 60, 250].entries()) {
      const image = `hangar-crash/commit:${i}`;
      const pending = d.client.machines.commit(APP, src.id, { image }).catch(() => undefined);
      await sleep(delayMs);
      await crashAndRestart();
      await pending;
      assert.deepEqual(await readdir(join(dataDir, 'machines', src.id, 'views')).catch(() => []), [], `no capture is left mounted after a crash ${delayMs} ms into a commit`);
      assert.equal((await sh(src.id, 'echo x > /probe && echo ok')).stdout, 'ok\n');
      const made = await d.client.images.inspect(image).catch(() => undefined);
      if (made) {
        const m = await d.client.machines.create(APP, { config: { ...busybox, image } });
        assert.equal((await sh(m.id, 'cat /marker')).stdout, 'source\n', `an image committed before a crash ${delayMs} ms in is whole`);
        await d.client.machines.destroy(APP, m.id, { force: true });
      }
    }
    const disks = (await readdir(join(pool(), 'disks'))).filter((f) => !f.startsWith(src.id));
    assert.deepEqual(disks, [], 'no disk outlives its machine');
    await d.client.machines.destroy(APP, src.id, { force: true });
  });
});
