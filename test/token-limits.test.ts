import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { get as httpGet } from 'node:http';
import { promisify } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { HANGAR, cleanupDataDir, http, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { attenuate, inspectToken, type Caveat } from '../src/sdk/index.ts';

// Per-token limits: a limits caveat, added by whoever holds a token (offline, by the SDK or the
// CLI), holds that token and every token narrowed from it to one budget, on top of the app's
// limits. A robot minting more tokens from its own gets no more room.

const APP = 'tl-app';
const SLEEPER = { image: 'hangar/busybox', init: { cmd: ['sleep', '3600'] } };
const ALL = ['read', 'write', 'exec', 'control', 'delete'] as const;

let dataDir: string;
let d: TestDaemon;
const as = (token: string) => ({ url: d.url, token });

async function mint(caveats: Caveat[]): Promise<string> {
  const res = await http(d, 'POST', '/v1/tokens', { caveats });
  assert.equal(res.status, 201, res.text);
  return res.body.token;
}

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  const { HANGAR_TOKEN: _t, HANGAR_API_URL: _u, ...inherited } = process.env;
  return promisify(execFile)(HANGAR, args, { env: { ...inherited, HANGAR_DATA_DIR: dataDir, ...env } })
    .then((r) => ({ code: 0, out: r.stdout, err: r.stderr }), (e) => ({ code: e.code as number, out: e.stdout as string, err: e.stderr as string }));
}

function assertTokenQuota(res: { status: number; body: any; text: string }, limit: string, caveatIndex: number): void {
  assert.equal(res.status, 422, res.text);
  assert.equal(res.body.code, 'quota_exceeded');
  assert.equal(res.body.details.scope, 'token', res.text);
  assert.equal(res.body.details.limit, limit, res.text);
  assert.equal(res.body.details.caveat_index, caveatIndex, res.text);
  assert.match(res.body.error, /token limit: the token's limits caveat/);
  assert.match(res.body.hint, /every token narrowed from/);
}

before(async () => {
  dataDir = await makeDataDir();
  d = await startDaemon(dataDir);
  await d.client.apps.create(APP);
});

after(async () => {
  await d?.kill().catch(() => undefined);
  if (dataDir) await cleanupDataDir(dataDir);
});

describe('token limits', () => {
  it('hold a token and every token narrowed from it to one budget of machines and running machines', async () => {
    const robot = await mint([{ type: 'apps', apps: { [APP]: [...ALL] } }, { type: 'limits', limits: { machines: 3, running_machines: 1 } }]);
    // The robot mints more tokens from its own, offline (SDK) and with the CLI: they share its budget.
    const viaSdk = await attenuate(robot, [{ type: 'validity', not_after: Math.floor(Date.now() / 1000) + 3600 }]);
    const viaCli = await cli(['tokens', 'attenuate', robot, '--ttl', '1h']);
    assert.equal(viaCli.code, 0, viaCli.err);
    const tokens = [robot, viaSdk, viaCli.out.trim()];
    const made: string[] = [];
    for (const t of tokens) {
      const res = await http(as(t), 'POST', `/v1/apps/${APP}/machines`, { config: SLEEPER, skip_launch: true });
      assert.equal(res.status, 200, res.text);
      made.push(res.body.id);
    }
    assertTokenQuota(await http(as(viaSdk), 'POST', `/v1/apps/${APP}/machines`, { config: SLEEPER, skip_launch: true }), 'machines', 1);
    // The app's own limits are untouched: the admin token still creates there.
    const admins = await d.client.machines.create(APP, { config: SLEEPER });

    assert.equal((await http(as(viaSdk), 'POST', `/v1/apps/${APP}/machines/${made[0]}/start`)).status, 200);
    const second = await http(as(viaCli.out.trim()), 'POST', `/v1/apps/${APP}/machines/${made[1]}/start`);
    assertTokenQuota(second, 'running_machines', 1);
    assert.equal(second.body.details.used, 1, 'the admin\'s running machine is not the robot\'s');
    // A start by the robot of a machine it did not make is its run, and counts too.
    await d.client.machines.stop(APP, admins.id);
    assertTokenQuota(await http(as(robot), 'POST', `/v1/apps/${APP}/machines/${admins.id}/start`), 'running_machines', 1);
    // Once the robot's run stops, there is room again; a destroyed machine frees a place.
    await http(as(robot), 'POST', `/v1/apps/${APP}/machines/${made[0]}/stop`, { signal: 'SIGKILL' });
    assert.equal((await http(as(robot), 'POST', `/v1/apps/${APP}/machines/${made[1]}/start`)).status, 200);
    assert.equal((await http(as(robot), 'DELETE', `/v1/apps/${APP}/machines/${made[2]}`)).status, 200);
    assert.equal((await http(as(robot), 'POST', `/v1/apps/${APP}/machines`, { config: SLEEPER, skip_launch: true })).status, 200);
    await d.client.machines.stop(APP, made[1]!, { signal: 'SIGKILL' });
  });

  it('only tighten: a narrower limits caveat added by the holder applies with the first, at 429 with Retry-After', async () => {
    const robot = await mint([{ type: 'apps', apps: { [APP]: [...ALL] } }, { type: 'limits', limits: { machines: 100, creates_per_minute: 600 } }]);
    const cliNarrowed = await cli(['tokens', 'attenuate', robot, '--limit', 'creates_per_minute=2', '--limit', 'memory_mb=256', '--json']);
    assert.equal(cliNarrowed.code, 0, cliNarrowed.err);
    const narrowed = JSON.parse(cliNarrowed.out).token as string;
    assert.deepEqual(inspectToken(narrowed).caveats.at(-1), { type: 'limits', limits: { creates_per_minute: 2, memory_mb: 256 } });
    const inspected = await cli(['tokens', 'inspect', narrowed]);
    assert.match(inspected.out, /caveat 3: limits memory_mb=256 creates_per_minute=2 \(for it and every token narrowed from it, together\)/);
    for (let i = 0; i < 2; i++) {
      const res = await http(as(narrowed), 'POST', `/v1/apps/${APP}/machines`, { config: SLEEPER, skip_launch: true });
      assert.equal(res.status, 200, res.text);
    }
    const third = await http(as(narrowed), 'POST', `/v1/apps/${APP}/machines`, { config: SLEEPER, skip_launch: true });
    assert.equal(third.status, 429, third.text);
    assert.equal(third.body.code, 'rate_limited');
    assert.deepEqual([third.body.details.scope, third.body.details.limit, third.body.details.caveat_index], ['token', 'creates_per_minute', 2]);
    assert.ok(Number(third.headers.get('retry-after')) >= 20, `Retry-After: ${third.headers.get('retry-after')}`);
    assert.match(third.body.hint, /Retry-After.*token limit/);
    // The wider token it came from has room of its own (its budget is not the narrower one's).
    assert.equal((await http(as(robot), 'POST', `/v1/apps/${APP}/machines`, { config: SLEEPER, skip_launch: true })).status, 200);
    // memory_mb: the narrowed token may not run a machine bigger than its limit.
    const big = await http(as(robot), 'POST', `/v1/apps/${APP}/machines`, { config: { ...SLEEPER, guest: { memory_mb: 512 } }, skip_launch: true });
    assertTokenQuota(await http(as(narrowed), 'POST', `/v1/apps/${APP}/machines/${big.body.id}/start`), 'memory_mb', 2);
    // A limits caveat with a field the daemon does not know is refused, not ignored; the CLI says so first.
    const unknown = await cli(['tokens', 'attenuate', robot, '--limit', 'gpus=1']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.err, /--limit/);
    const forged = await attenuate(robot, [{ type: 'limits', limits: { gpus: 1 } as never }]);
    assert.equal((await http(as(forged), 'GET', `/v1/apps/${APP}/machines`)).status, 401);
  });

  it('rate-limit starts of one machine per token, and count volumes and their size', async () => {
    const robot = await attenuate(await mint([{ type: 'apps', apps: { [APP]: [...ALL] } }]), [
      { type: 'limits', limits: { starts_per_second: 0.01, start_burst: 1, volumes: 1, volume_gb: 2 } },
    ]);
    const m = await d.client.machines.create(APP, { config: SLEEPER, skip_launch: true });
    assert.equal((await http(as(robot), 'POST', `/v1/apps/${APP}/machines/${m.id}/start`)).status, 200);
    await d.client.machines.stop(APP, m.id, { signal: 'SIGKILL' });
    const again = await http(as(robot), 'POST', `/v1/apps/${APP}/machines/${m.id}/start`);
    assert.equal(again.status, 429, again.text);
    assert.deepEqual([again.body.details.scope, again.body.details.limit], ['token', 'starts_per_second']);
    assert.ok(Number(again.headers.get('retry-after')) >= 90);
    // The admin token is not held by the robot's rate.
    await d.client.machines.start(APP, m.id);
    await d.client.machines.stop(APP, m.id, { signal: 'SIGKILL' });

    const v = await http(as(robot), 'POST', `/v1/apps/${APP}/volumes`, { name: 'data', size_gb: 1 });
    assert.equal(v.status, 200, v.text);
    assertTokenQuota(await http(as(robot), 'POST', `/v1/apps/${APP}/volumes`, { name: 'more', size_gb: 1 }), 'volumes', 1);
    assertTokenQuota(await http(as(robot), 'PUT', `/v1/apps/${APP}/volumes/${v.body.id}/extend`, { size_gb: 3 }), 'volume_gb', 1);
    assert.equal((await http(as(robot), 'PUT', `/v1/apps/${APP}/volumes/${v.body.id}/extend`, { size_gb: 2 })).status, 200);
    assert.equal((await http(d, 'POST', `/v1/apps/${APP}/volumes`, { name: 'admins', size_gb: 1 })).status, 200);
  });

  it('count a stopped machine woken by an exec as a start by the token', async () => {
    const robot = await mint([{ type: 'apps', apps: { [APP]: [...ALL] } }, { type: 'limits', limits: { running_machines: 1 } }]);
    const [m1, m2] = await Promise.all([0, 1].map(() => d.client.machines.create(APP, { config: SLEEPER })));
    await Promise.all([m1!, m2!].map((m) => d.client.machines.stop(APP, m.id, { signal: 'SIGKILL' })));
    const woke = await http(as(robot), 'POST', `/v1/apps/${APP}/machines/${m1!.id}/exec`, { command: ['true'] });
    assert.equal(woke.status, 200, woke.text);
    assert.equal(woke.body.started, true);
    assertTokenQuota(await http(as(robot), 'POST', `/v1/apps/${APP}/machines/${m2!.id}/exec`, { command: ['true'] }), 'running_machines', 1);
    await Promise.all([m1!, m2!].map((m) => d.client.machines.destroy(APP, m.id, { force: true })));
  });

  it('count a fork\'s machines and its copies of volumes as the token\'s', async () => {
    const robot = await mint([{ type: 'apps', apps: { [APP]: [...ALL] } }, { type: 'limits', limits: { volumes: 1 } }]);
    const v = await d.client.volumes.create(APP, { name: 'src', size_gb: 1 });
    const m = await d.client.machines.create(APP, { config: { ...SLEEPER, rootfs: { size_gb: 1 }, mounts: [{ volume: v.id, path: '/data' }] } });
    const first = await http(as(robot), 'POST', `/v1/apps/${APP}/machines/${m.id}/fork`, { skip_launch: true });
    assert.equal(first.status, 200, first.text);
    const copy = first.body.machines[0].config.mounts[0].volume as string;
    assert.notEqual(copy, v.id);
    assertTokenQuota(await http(as(robot), 'POST', `/v1/apps/${APP}/machines/${m.id}/fork`, { skip_launch: true }), 'volumes', 1);
    for (const id of [m.id, first.body.machines[0].id]) await d.client.machines.destroy(APP, id, { force: true });
    for (const id of [v.id, copy]) await d.client.volumes.delete(APP, id);
  });

  it('charge nothing for a start or restart refused for its lease', async () => {
    const WEB = 'tl-leased';
    await d.client.apps.create(WEB);
    const robot = await mint([{ type: 'apps', apps: { [WEB]: [...ALL] } }, { type: 'limits', limits: { running_machines: 1, starts_per_second: 0.01, start_burst: 1 } }]);
    // The admin's web machine, leased by the admin and stopped.
    const serve = ['sh', '-c', 'mkdir -p /srv; echo up > /srv/index.html; exec httpd -f -p 8080 -h /srv'];
    const web = await http(d, 'POST', `/v1/apps/${WEB}/machines`, { lease_ttl: 600, config: { image: 'hangar/busybox', init: { cmd: serve }, services: [{ internal_port: 8080 }] } });
    assert.equal(web.status, 200, web.text);
    const base = `/v1/apps/${WEB}/machines/${web.body.id}`;
    const byHolder = { 'fly-machine-lease-nonce': web.body.nonce as string };
    assert.equal((await http(d, 'POST', `${base}/stop`, { signal: 'SIGKILL' }, byHolder)).status, 200);

    for (const action of ['restart', 'start']) {
      const refused = await http(as(robot), 'POST', `${base}/${action}`);
      assert.equal(refused.body.code, 'machine_leased', `${action}: ${refused.text}`);
    }
    assert.equal((await http(d, 'DELETE', `${base}/lease`, undefined, byHolder)).status, 200);
    // The edge proxy wakes it: the daemon's own start, which keeps whose run it was.
    const woken = await new Promise<string>((resolve, reject) => {
      httpGet(d.proxyUrl, { headers: { host: `${WEB}.localhost` } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c) => (body += c)).on('end', () => resolve(body));
      }).on('error', reject);
    });
    assert.equal(woken, 'up\n');
    // So the robot's budget holds none of it, and its start rate is untouched.
    const own = await http(as(robot), 'POST', `/v1/apps/${WEB}/machines`, { config: SLEEPER });
    assert.equal(own.status, 200, `the refused restart was not the robot's run: ${own.text}`);
    await d.client.machines.stop(WEB, own.body.id, { signal: 'SIGKILL' });
    await d.client.machines.stop(WEB, web.body.id, { signal: 'SIGKILL' });
    assert.equal((await http(as(robot), 'POST', `${base}/start`)).status, 200, 'the refused start took none of the start rate');
    for (const id of [own.body.id, web.body.id]) await d.client.machines.destroy(WEB, id, { force: true });
  });

  it('keep what a budget holds across a daemon restart, and are minted by MCP', async () => {
    const robot = await mint([{ type: 'apps', apps: { [APP]: [...ALL] } }, { type: 'limits', limits: { machines: 1 } }]);
    assert.equal((await http(as(robot), 'POST', `/v1/apps/${APP}/machines`, { config: SLEEPER, skip_launch: true })).status, 200);
    await d.stop();
    d = await startDaemon(dataDir);
    assertTokenQuota(await http(as(robot), 'POST', `/v1/apps/${APP}/machines`, { config: SLEEPER, skip_launch: true }), 'machines', 1);

    const client = new Client({ name: 'token-limits-test', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${robot}` } } }));
    try {
      const r = (await client.callTool({ name: 'token_create', arguments: { app: APP, limits: { running_machines: 2 } } })) as CallToolResult;
      assert.ok(!r.isError, JSON.stringify(r.content));
      const minted = (r.structuredContent as { token: string }).token;
      assert.deepEqual(inspectToken(minted).caveats.map((c) => c.type), ['apps', 'limits', 'apps', 'limits']);
      assertTokenQuota(await http(as(minted), 'POST', `/v1/apps/${APP}/machines`, { config: SLEEPER, skip_launch: true }), 'machines', 1);
    } finally {
      await client.close();
    }
  });
});
