import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanupDataDir, http, makeDataDir, startDaemon, withDaemon, type TestDaemon } from './helpers/daemon.ts';

// Limits against runaway robots: an app's quotas (422 quota_exceeded) and rates (429
// rate_limited with Retry-After), and a robot looping start over 250 stopped machines is held
// at the API (by its token's limits) while the daemon keeps answering everyone else quickly.

let d: TestDaemon & { close(): Promise<void> };
const SLEEPER = { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } };

before(async () => {
  d = await withDaemon();
});
after(async () => {
  await d?.close();
});

describe('limits', () => {
  it('keeps an app\'s limits in its settings', async () => {
    const created = await http(d, 'POST', '/v1/apps', { app_name: 'lim-settings', limits: { machines: 7, start_burst: 2 } });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.body.limits, { machines: 7, start_burst: 2 });
    const patched = await http(d, 'PATCH', '/v1/apps/lim-settings', { limits: { running_machines: 3 } });
    assert.deepEqual(patched.body.limits, { machines: 7, start_burst: 2, running_machines: 3 });
    assert.deepEqual((await http(d, 'GET', '/v1/apps/lim-settings')).body.limits, { machines: 7, start_burst: 2, running_machines: 3 });
    const app = await d.client.apps.get('lim-settings');
    assert.equal(app.effective_limits.running_machines, 3);
    assert.equal(app.effective_limits.volumes, 1000, 'the daemon\'s default where the app sets none');
    const bad = await http(d, 'PATCH', '/v1/apps/lim-settings', { limits: { machine: 3 } });
    assert.equal(bad.status, 400);
  });

  it('takes every app\'s defaults from config.json', async () => {
    const dataDir = await makeDataDir();
    try {
      await writeFile(join(dataDir, 'config.json'), JSON.stringify({ limits: { machines: 1 } }));
      const other = await startDaemon(dataDir);
      await other.client.apps.create('capped');
      assert.equal((await other.client.apps.get('capped')).effective_limits.machines, 1);
      await other.client.machines.create('capped', { config: SLEEPER, skip_launch: true });
      const second = await http(other, 'POST', '/v1/apps/capped/machines', { config: SLEEPER, skip_launch: true });
      assert.equal(second.status, 422);
      assert.equal(second.body.details.limit, 'machines');
      await other.kill();
    } finally {
      await cleanupDataDir(dataDir);
    }
  });

  it('refuses machines, running machines and memory over the app\'s quotas, with a hint', async () => {
    await d.client.apps.create('lim-quota', { settings: { limits: { machines: 3, running_machines: 1, memory_mb: 512 } } });
    const first = await d.client.machines.create('lim-quota', { config: SLEEPER });
    const second = await d.client.machines.create('lim-quota', { config: SLEEPER, skip_launch: true });
    const running = await http(d, 'POST', `/v1/apps/lim-quota/machines/${second.id}/start`);
    assert.equal(running.status, 422);
    assert.equal(running.body.code, 'quota_exceeded');
    assert.equal(running.body.details.limit, 'running_machines');
    assert.match(running.body.hint, /stop machines|limits/);
    await d.client.machines.stop('lim-quota', first.id);
    await d.client.machines.start('lim-quota', second.id);

    const big = await http(d, 'POST', '/v1/apps/lim-quota/machines', { config: { ...SLEEPER, guest: { memory_mb: 1024 } }, skip_launch: true });
    assert.equal(big.status, 200, big.text);
    await d.client.machines.stop('lim-quota', second.id);
    const tooBig = await http(d, 'POST', `/v1/apps/lim-quota/machines/${big.body.id}/start`);
    assert.equal(tooBig.body.code, 'quota_exceeded');
    assert.equal(tooBig.body.details.limit, 'memory_mb');

    const fourth = await http(d, 'POST', '/v1/apps/lim-quota/machines', { config: SLEEPER, skip_launch: true });
    assert.equal(fourth.status, 422);
    assert.equal(fourth.body.details.limit, 'machines');
    assert.equal((await d.client.machines.list('lim-quota')).length, 3);
  });

  it('rate-limits starts of one machine and creates, answering 429 with Retry-After', async () => {
    await d.client.apps.create('lim-rate', { settings: { limits: { starts_per_second: 0.01, start_burst: 2, creates_per_minute: 2 } } });
    const m = await d.client.machines.create('lim-rate', { config: SLEEPER, skip_launch: true });
    for (let i = 0; i < 2; i++) {
      await d.client.machines.start('lim-rate', m.id);
      await d.client.machines.stop('lim-rate', m.id, { signal: 'SIGKILL' });
    }
    const third = await http(d, 'POST', `/v1/apps/lim-rate/machines/${m.id}/start`);
    assert.equal(third.status, 429, third.text);
    assert.equal(third.body.code, 'rate_limited');
    assert.ok(Number(third.headers.get('retry-after')) >= 90, `Retry-After: ${third.headers.get('retry-after')}`);
    assert.equal(third.body.details.retry_after_seconds, Number(third.headers.get('retry-after')));
    assert.match(third.body.hint, /Retry-After/);
    // Creates have a rate of their own.
    await d.client.machines.create('lim-rate', { config: SLEEPER, skip_launch: true });
    const create = await http(d, 'POST', '/v1/apps/lim-rate/machines', { config: SLEEPER, skip_launch: true });
    assert.equal(create.status, 429);
    assert.equal(create.body.details.limit, 'creates_per_minute');
    // Each app has its own bucket.
    const elsewhere = await http(d, 'POST', '/v1/apps/lim-settings/machines', { config: SLEEPER, skip_launch: true });
    assert.equal(elsewhere.status, 200, elsewhere.text);
  });

  it('refuses volumes over the app\'s count and size', async () => {
    await d.client.apps.create('lim-vol', { settings: { limits: { volumes: 1, volume_gb: 2 } } });
    const v = await d.client.volumes.create('lim-vol', { name: 'data', size_gb: 1 });
    const second = await http(d, 'POST', '/v1/apps/lim-vol/volumes', { name: 'more', size_gb: 1 });
    assert.equal(second.status, 422);
    assert.equal(second.body.details.limit, 'volumes');
    const grow = await http(d, 'PUT', `/v1/apps/lim-vol/volumes/${v.id}/extend`, { size_gb: 3 });
    assert.equal(grow.status, 422, grow.text);
    assert.equal(grow.body.details.limit, 'volume_gb');
  });

  it('holds a robot looping start over 250 stopped machines while the host stays responsive', async () => {
    // 250 machines over three apps, 50 times what the robot may run. The robot's token carries a
    // limits caveat: 5 running, across all of them.
    const APPS = ['lim-robot-1', 'lim-robot-2', 'lim-robot-3'];
    const MACHINES = 250;
    const RUNNING = 5;
    for (const app of APPS) await d.client.apps.create(app);
    await d.client.apps.create('lim-bystander');
    const robotToken = (await http(d, 'POST', '/v1/tokens', {
      caveats: [{ type: 'apps', apps: Object.fromEntries(APPS.map((a) => [a, ['read', 'write', 'control']])) }, { type: 'limits', limits: { running_machines: RUNNING } }],
    })).body.token as string;
    const made = Date.now();
    const machines: Array<{ app: string; id: string }> = [];
    let n = 0;
    await inParallel(6, MACHINES, async () => {
      const app = APPS[n++ % APPS.length]!;
      machines.push({ app, id: (await d.client.machines.create(app, { config: SLEEPER, skip_launch: true })).id });
    });
    console.log(`# created ${MACHINES} stopped machines in ${Date.now() - made} ms`);

    // The robot: start every machine, over and over, 8 at a time, for 8 s.
    const statuses = new Map<string, number>();
    let robotCalls = 0;
    let running = true;
    const robot = (async () => {
      const end = Date.now() + 8000;
      await Promise.all(Array.from({ length: 8 }, async (_, lane) => {
        for (let i = lane; Date.now() < end; i += 8) {
          const m = machines[i % machines.length]!;
          const r = await http({ url: d.url, token: robotToken }, 'POST', `/v1/apps/${m.app}/machines/${m.id}/start`);
          robotCalls++;
          const key = `${r.status}${r.body?.details?.scope ? ` ${r.body.details.scope}` : ''}`;
          statuses.set(key, (statuses.get(key) ?? 0) + 1);
          if (r.status === 429) assert.ok(r.headers.get('retry-after'));
        }
      })).finally(() => (running = false)); // a failing lane must end the bystander's loop too
    })();
    // Meanwhile another client's calls: the daemon's health and another app's machines.
    const latencies: number[] = [];
    while (running) {
      const t = performance.now();
      const [health, list] = await Promise.all([http(d, 'GET', '/health'), http(d, 'GET', '/v1/apps/lim-bystander/machines')]);
      latencies.push(performance.now() - t);
      assert.equal(health.status, 200, health.text);
      assert.equal(list.status, 200, list.text);
      await new Promise((r) => setTimeout(r, 50));
    }
    await robot;
    latencies.sort((a, b) => a - b);
    const p = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
    console.log(`# robot: ${robotCalls} start calls, statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
    console.log(`# bystander: ${latencies.length} calls, p50 ${p(0.5).toFixed(1)} ms, p95 ${p(0.95).toFixed(1)} ms, max ${latencies.at(-1)!.toFixed(1)} ms`);
    let started = 0;
    for (const app of APPS) started += (await d.client.machines.list(app)).filter((m) => m.state === 'started').length;
    assert.equal(started, RUNNING);
    assert.equal(statuses.get('200'), RUNNING);
    assert.ok((statuses.get('422 token') ?? 0) > 100, 'most starts are refused at the API, by the token\'s limit');
    assert.ok(p(0.95) < 500, `p95 ${p(0.95)} ms`);
  });
});

async function inParallel(lanes: number, total: number, work: () => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: lanes }, async () => {
    while (next++ < total) await work();
  }));
}
