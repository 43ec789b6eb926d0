import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { withDaemon, http, type TestDaemon } from './helpers/daemon.ts';
import { waitFor } from './helpers/wait.ts';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

// The robot's loop through the Machines API: create, build up in place, stop, start, exec.

const APP = 'life';
let d: TestDaemon & { close(): Promise<void> };

before(async () => {
  d = await withDaemon();
  // One machine here stops and starts as fast as it can; the start rate limit is limits.test.ts's subject.
  await d.client.apps.create(APP, { settings: { limits: { starts_per_second: 1000, start_burst: 1000 } } });
});
after(async () => {
  await d?.close();
});

const b64 = (s: string) => Buffer.from(s).toString('base64');
const sh = async (id: string, script: string) => d.client.machines.exec(APP, id, ['sh', '-c', script]);

describe('machine lifecycle', () => {
  it('creates a started machine from hangar/busybox with env, files and command, in Fly shape', async () => {
    const m = await d.client.machines.create(APP, {
      name: 'first',
      config: {
        image: 'hangar/busybox',
        env: { GREETING: 'hello' },
        init: { cmd: ['sh', '-c', 'echo "booted $GREETING"; exec sleep 3600'] },
        files: [{ guest_path: '/etc/app/config.txt', raw_value: b64('key=value\n') }],
        metadata: { role: 'worker' },
      },
    });
    assert.equal(m.state, 'started');
    assert.match(m.id, /^[0-9a-f]{14}$/);
    assert.match(m.instance_id, /^[0-9A-Z]{26}$/);
    assert.equal(m.name, 'first');
    assert.equal(m.image_ref.repository, 'hangar/busybox');
    assert.match(m.image_ref.digest, /^sha256:[0-9a-f]{64}$/);
    assert.ok(m.events.some((e) => e.type === 'start' && e.status === 'started'));

    const env = await sh(m.id, 'echo $GREETING $FLY_MACHINE_ID $FLY_APP_NAME; cat /etc/app/config.txt');
    assert.equal(env.exit_code, 0);
    assert.equal(env.stdout, `hello ${m.id} ${APP}\nkey=value\n`);

    const logs = await waitFor(async () => {
      const { lines } = await d.client.machines.logs(APP, m.id);
      return lines.includes('booted hello') ? lines : undefined;
    });
    assert.ok(logs.includes('booted hello'));

    const byMeta = await http(d, 'GET', `/v1/apps/${APP}/machines?metadata.role=worker`);
    assert.deepEqual(byMeta.body.map((x: { id: string }) => x.id), [m.id]);
    const none = await http(d, 'GET', `/v1/apps/${APP}/machines?metadata.role=web`);
    assert.deepEqual(none.body, []);
  });

  it('keeps every file across stop/start, 100 times, and start is the fast path', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    const setup = await sh(m.id, 'mkdir -p /work /usr/local && echo 0 > /work/counter && echo built > /usr/local/marker');
    assert.equal(setup.exit_code, 0, setup.stderr);
    for (let i = 1; i <= 100; i++) {
      await d.client.machines.stop(APP, m.id, { timeout: '2s' });
      await d.client.machines.start(APP, m.id);
      if (i % 25 === 0) {
        const r = await sh(m.id, 'n=$(cat /work/counter); echo $((n+1)) > /work/counter; cat /work/counter /usr/local/marker');
        assert.equal(r.stdout, `${i / 25}\nbuilt\n`);
      }
    }
    const got = await d.client.machines.get(APP, m.id);
    assert.equal(got.state, 'started');
  });

  it('resets the writable layer at each start with rootfs.persist=never', async () => {
    const m = await d.client.machines.create(APP, {
      config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] }, rootfs: { persist: 'never' }, files: [{ guest_path: '/seed', raw_value: b64('seed') }] },
    });
    await sh(m.id, 'echo scratch > /scratch');
    await d.client.machines.stop(APP, m.id);
    await d.client.machines.start(APP, m.id);
    const r = await sh(m.id, 'ls /scratch 2>&1; cat /seed');
    assert.match(r.stdout, /No such file/);
    assert.match(r.stdout, /seed$/);
  });

  it('exec returns output and exit code, takes stdin, and kills a command at its timeout', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    const r = await sh(m.id, 'echo out; echo err >&2; exit 3');
    assert.deepEqual([r.exit_code, r.stdout, r.stderr], [3, 'out\n', 'err\n']);
    const piped = await d.client.machines.exec(APP, m.id, ['cat'], { stdin: 'from stdin' });
    assert.equal(piped.stdout, 'from stdin');
    const t0 = Date.now();
    const slow = await d.client.machines.exec(APP, m.id, ['sh', '-c', 'sleep 30'], { timeoutS: 1 });
    assert.equal(slow.timed_out, true);
    assert.ok(Date.now() - t0 < 10_000);
    const ps = await sh(m.id, 'ps -o args | grep -c "[s]leep 30" || true');
    assert.equal(ps.stdout.trim(), '0', 'the timed-out command is gone');
  });

  it('answers 409 naming the state for illegal actions, and exactly one of many concurrent starts wins', async () => {
    const m = await d.client.machines.create(APP, { skip_launch: true, config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    assert.equal(m.state, 'created');
    const exec = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/exec`, { command: ['true'] });
    assert.equal(exec.status, 409);
    assert.equal(exec.body.code, 'invalid_state');
    assert.match(exec.body.error, /created/);
    assert.ok(exec.body.hint);

    const results = await Promise.all(Array.from({ length: 8 }, () => http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/start`)));
    const statuses = results.map((r) => r.status).sort();
    assert.equal(statuses.filter((s) => s === 200).length, 1, JSON.stringify(results.map((r) => r.body)));
    assert.equal(statuses.filter((s) => s === 409).length, 7);
    for (const r of results.filter((x) => x.status === 409)) assert.match(r.body.error, /starting|started/);
    assert.equal((await d.client.machines.get(APP, m.id)).state, 'started');

    const again = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/start`);
    assert.equal(again.status, 409);
    assert.equal(again.body.details.state, 'started');
    const destroy = await http(d, 'DELETE', `/v1/apps/${APP}/machines/${m.id}`);
    assert.equal(destroy.status, 409);
    assert.match(destroy.body.hint, /force=true/);
  });

  it('waits for states and times out with 408', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    const waiting = d.client.machines.wait(APP, m.id, 'stopped', { timeoutS: 20 });
    await d.client.machines.stop(APP, m.id);
    assert.deepEqual(await waiting, { ok: true });
    const t = await http(d, 'GET', `/v1/apps/${APP}/machines/${m.id}/wait?state=started&timeout=1`);
    assert.equal(t.status, 408);
    assert.equal(t.body.code, 'wait_timeout');
  });

  it('updates the config with a new instance_id and restarts a started machine on it', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', env: { V: '1' }, init: { cmd: ['sleep', '3600'] } } });
    await sh(m.id, 'echo kept > /kept');
    const u = await d.client.machines.update(APP, m.id, { config: { image: 'hangar/busybox', env: { V: '2' }, init: { cmd: ['sleep', '3600'] } } });
    assert.notEqual(u.instance_id, m.instance_id);
    assert.equal(u.state, 'started');
    const r = await sh(m.id, 'echo $V; cat /kept');
    assert.equal(r.stdout, '2\nkept\n');
  });

  it('restarts a started machine, recording its exit, and a stopped one, recording none', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    const exits = async () => (await d.client.machines.get(APP, m.id)).events.filter((e) => e.type === 'exit').length;
    await d.client.machines.restart(APP, m.id);
    assert.equal((await d.client.machines.get(APP, m.id)).state, 'started');
    assert.equal(await exits(), 1, 'the run the restart ended');
    await d.client.machines.stop(APP, m.id);
    await d.client.machines.wait(APP, m.id, 'stopped');
    const stoppedExits = await exits();
    await d.client.machines.restart(APP, m.id);
    assert.equal((await d.client.machines.get(APP, m.id)).state, 'started');
    assert.equal(await exits(), stoppedExits, 'a stopped machine had no run to end');
    await d.client.machines.destroy(APP, m.id, { force: true });
  });

  it('applies restart policies and records exits and OOM kills in events', async () => {
    const failing = await d.client.machines.create(APP, {
      config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'echo run >> /runs; exit 7'] }, restart: { policy: 'on-failure', max_retries: 2 } },
    });
    const stopped = await waitFor(async () => {
      const got = await d.client.machines.get(APP, failing.id);
      const exits = got.events.filter((e) => e.type === 'exit');
      return got.state === 'stopped' && exits.length === 3 ? got : undefined;
    }, 20_000);
    const exitEv = stopped.events.find((e) => e.type === 'exit')!.request!.exit_event as { exit_code: number; restarting: boolean };
    assert.equal(exitEv.exit_code, 7);
    assert.equal(exitEv.restarting, false, 'the newest exit is the last one: no more retries');

    const clean = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['true'] }, restart: { policy: 'on-failure' } } });
    const done = await waitFor(async () => {
      const got = await d.client.machines.get(APP, clean.id);
      return got.state === 'stopped' ? got : undefined;
    });
    assert.equal(done.events.filter((e) => e.type === 'exit').length, 1, 'a clean exit is not restarted');

    const hog = await d.client.machines.create(APP, {
      config: {
        image: 'hangar/busybox', guest: { memory_mb: 32 }, restart: { policy: 'no' },
        init: { cmd: ['sh', '-c', 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived'] },
      },
    });
    const oom = await waitFor(async () => {
      const got = await d.client.machines.get(APP, hog.id);
      return got.state === 'stopped' ? got : undefined;
    }, 30_000);
    const oomExit = oom.events.find((e) => e.type === 'exit')!.request!.exit_event as { oom_killed: boolean; exit_code: number };
    assert.equal(oomExit.oom_killed, true, JSON.stringify(oom.events));
  });

  it('holds leases: calls without the nonce get 409, with it they pass', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    const lease = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/lease`, { ttl: 60, description: 'robot' });
    assert.equal(lease.status, 200);
    const nonce = lease.body.data.nonce;
    assert.equal(lease.body.nonce, nonce);
    const denied = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/stop`);
    assert.equal(denied.status, 409);
    assert.equal(denied.body.code, 'machine_leased');
    const other = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/lease`, { ttl: 60 });
    assert.equal(other.status, 409);
    const ok = await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/stop`, {}, { 'fly-machine-lease-nonce': nonce });
    assert.equal(ok.status, 200);
    const rel = await http(d, 'DELETE', `/v1/apps/${APP}/machines/${m.id}/lease`, undefined, { 'fly-machine-lease-nonce': nonce });
    assert.equal(rel.status, 200);
    assert.equal((await http(d, 'GET', `/v1/apps/${APP}/machines/${m.id}/lease`)).status, 404);

    const leased = await http(d, 'POST', `/v1/apps/${APP}/machines`, { lease_ttl: 60, config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    assert.equal(leased.status, 200);
    assert.match(leased.body.nonce, /^[0-9a-z]+$/, 'create with lease_ttl returns the nonce');
    assert.equal(leased.body.state, 'started');
    assert.equal((await http(d, 'POST', `/v1/apps/${APP}/machines/${leased.body.id}/stop`)).status, 409);
    const held = await http(d, 'POST', `/v1/apps/${APP}/machines/${leased.body.id}/stop`, {}, { 'fly-machine-lease-nonce': leased.body.nonce });
    assert.equal(held.status, 200);
  });

  it('sets and deletes metadata, cordons, and destroys (listed with include_deleted)', async () => {
    const m = await d.client.machines.create(APP, { skip_launch: true, config: { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } } });
    assert.equal((await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/metadata/team`, { value: 'blue' })).status, 204);
    assert.deepEqual((await http(d, 'GET', `/v1/apps/${APP}/machines/${m.id}/metadata`)).body, { team: 'blue' });
    assert.equal((await http(d, 'DELETE', `/v1/apps/${APP}/machines/${m.id}/metadata/team`)).status, 204);
    assert.equal((await http(d, 'POST', `/v1/apps/${APP}/machines/${m.id}/cordon`)).status, 200);
    await d.client.machines.destroy(APP, m.id);
    const live = await d.client.machines.list(APP);
    assert.ok(!live.some((x) => x.id === m.id));
    const all = await d.client.machines.list(APP, { includeDeleted: true });
    assert.equal(all.find((x) => x.id === m.id)?.state, 'destroyed');
  });

  it('caps the log as it is written, rotating it by rename', async () => {
    const m = await d.client.machines.create(APP, {
      config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'yes "a line of machine output" | head -c 9000000; echo last line; exec sleep 3600'] } },
    });
    const logs = join(d.dataDir, 'machines', m.id, 'logs');
    const rotated = () => readdirSync(logs).filter((f) => f.startsWith('@'));
    // `current` is briefly absent while multilog swaps files.
    const current = () => (existsSync(join(logs, 'current')) ? readFileSync(join(logs, 'current'), 'utf8') : '');
    await waitFor(async () => (rotated().length > 0 && current().includes('last line') ? true : undefined), 20_000, 'rotation');
    assert.ok(statSync(join(logs, 'current')).size < 8 * 2 ** 20);
    assert.equal(rotated().length, 1, 'one older file is kept');
    assert.ok(statSync(join(logs, rotated()[0]!)).size <= 8 * 2 ** 20);
    const { lines } = await d.client.machines.logs(APP, m.id, { tail: 5 });
    assert.ok(lines.length <= 5);
    await d.client.machines.destroy(APP, m.id, { force: true });
  });

  it('follows logs as a server-sent event stream', async () => {
    const m = await d.client.machines.create(APP, { config: { image: 'hangar/busybox', init: { cmd: ['sh', '-c', 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done'] } } });
    const abort = new AbortController();
    const seen: string[] = [];
    try {
      for await (const line of d.client.machines.followLogs(APP, m.id, { tail: 0, signal: abort.signal })) {
        seen.push(line);
        if (seen.length === 3) abort.abort();
      }
    } catch (err) {
      if (!abort.signal.aborted) throw err;
    }
    assert.equal(seen.length, 3);
    assert.match(seen[0]!, /^tick \d+$/);
    await d.client.machines.destroy(APP, m.id, { force: true });
  });
});
