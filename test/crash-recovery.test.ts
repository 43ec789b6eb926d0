import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { HANGAR, cleanupDataDir, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Store } from '../src/machines/store.ts';

// kill -9 of the daemon loses nothing: machines still running stay started and controllable,
// a machine that ended while the daemon was down is recorded as stopped with its exit.

const APP = 'crash';
let dataDir: string;
let d: TestDaemon;

before(async () => {
  dataDir = await makeDataDir();
  d = await startDaemon(dataDir);
  await d.client.apps.create(APP);
});
after(async () => {
  await d?.kill().catch(() => undefined);
  await cleanupDataDir(dataDir);
});

describe('crash safety', () => {
  it('adopts running machines and records exits that happened while it was down', async () => {
    const keeper = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    const shortLived = await d.client.machines.create(APP, {
      config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'sleep 2; exit 5'] }, restart: { policy: 'no' } },
    });
    const stopped = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    await d.client.machines.exec(APP, keeper.id, ['sh', '-c', 'echo precious > /data.txt']);
    await d.client.machines.stop(APP, stopped.id);

    await d.kill();
    await new Promise((r) => setTimeout(r, 3000)); // shortLived exits while no daemon watches

    d = await startDaemon(dataDir);
    assert.match(d.output(), /reconciled: 1 running adopted, 1 exited while down/);
    assert.equal((await d.client.machines.get(APP, keeper.id)).state, 'started');
    assert.equal((await d.client.machines.get(APP, stopped.id)).state, 'stopped');
    const ended = await d.client.machines.get(APP, shortLived.id);
    assert.equal(ended.state, 'stopped');
    const exit = ended.events.find((e) => e.type === 'exit')?.request?.exit_event as { exit_code: number } | undefined;
    assert.equal(exit?.exit_code, 5);

    // The adopted machine is fully controllable, its files intact.
    const r = await d.client.machines.exec(APP, keeper.id, ['cat', '/data.txt']);
    assert.equal(r.stdout, 'precious\n');
    await d.client.machines.stop(APP, keeper.id);
    await d.client.machines.start(APP, keeper.id);
    assert.equal((await d.client.machines.exec(APP, keeper.id, ['cat', '/data.txt'])).stdout, 'precious\n');
    await d.client.machines.start(APP, stopped.id);
  });

  it('notices an adopted machine exiting after the restart', async () => {
    const m = await d.client.machines.create(APP, {
      config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'sleep 4; exit 9'] }, restart: { policy: 'no' } },
    });
    await d.kill();
    d = await startDaemon(dataDir);
    const got = await waitFor(async () => {
      const x = await d.client.machines.get(APP, m.id);
      return x.state === 'stopped' ? x : undefined;
    }, 15_000, 'adopted machine stopped');
    const exit = got.events.find((e) => e.type === 'exit')?.request?.exit_event as { exit_code: number };
    assert.equal(exit.exit_code, 9);
  });

  it('refuses a second daemon on a data dir one already serves', () => {
    const second = spawnSync(HANGAR, ['serve', '--data-dir', dataDir, '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(second.status, 1);
    assert.match(second.stderr, new RegExp(`another Hangar daemon \\(pid ${d.process.pid}\\) serves`));
    assert.match(second.stderr, /hint: stop it first/);
  });

  it('SIGTERM shuts the daemon down cleanly and leaves machines running', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    await d.stop();
    assert.equal(d.process.exitCode, 0);
    d = await startDaemon(dataDir);
    assert.equal((await d.client.machines.get(APP, m.id)).state, 'started');
    assert.equal((await d.client.machines.exec(APP, m.id, ['echo', 'alive'])).stdout, 'alive\n');
  });

  it('a daemon killed during a stop reconciles the machine to a real state', async () => {
    const m = await d.client.machines.create(APP, {
      config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'trap "" TERM; sleep 3600'] }, stop_config: { timeout: '3s' } },
    });
    const stopping = d.client.machines.stop(APP, m.id).catch(() => undefined);
    await waitFor(async () => ((await d.client.machines.get(APP, m.id)).state === 'stopping' ? true : undefined), 5000);
    await d.kill();
    await stopping;
    d = await startDaemon(dataDir);
    const state = (await d.client.machines.get(APP, m.id)).state;
    assert.ok(state === 'started' || state === 'stopped', state);
    if (state === 'started') await d.client.machines.stop(APP, m.id, { timeout: '1s' });
    assert.equal((await d.client.machines.get(APP, m.id)).state, 'stopped');
  });
});

describe('half-made work', () => {
  it('finishes a create the daemon died in the middle of', async () => {
    const m = await d.client.machines.create(APP, { skip_launch: true, config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    await d.kill();
    // Put the record back to where a kill -9 during create leaves it: `creating`, intent open,
    // bundle not yet written.
    const store = new Store(join(dataDir, 'state.db'));
    const rec = store.getMachine(m.id)!;
    rec.state = 'creating';
    store.updateMachine(rec);
    store.openIntent(m.id, 'create', 'creating');
    store.close();
    await rm(join(dataDir, 'machines', m.id, 'bundle'), { recursive: true, force: true });

    d = await startDaemon(dataDir);
    assert.match(d.output(), /1 finished/);
    const got = await d.client.machines.get(APP, m.id);
    assert.equal(got.state, 'created');
    await d.client.machines.start(APP, m.id);
    assert.equal((await d.client.machines.exec(APP, m.id, ['echo', 'ok'])).stdout, 'ok\n');
  });
});
