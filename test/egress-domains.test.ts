import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import { cleanupDataDir, HANGAR, http, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { makeOutside, startResolver, type Outside, type TestResolver } from './helpers/outside-net.ts';
import { listenIn } from './helpers/netns-probe.ts';
import { firewallTable, networkTag } from '../src/network/names.ts';
import type { EgressEvent } from '../src/sdk/index.ts';

// Egress by domain name, seen from inside machines: an app reaches the addresses its gateway's DNS
// answered for the names it allows, and nothing else, whatever address a program hard-codes.
// "Outside" is a namespace this test makes (helpers/outside-net.ts) with three addresses; a test
// resolver on loopback is the daemon's upstream.

let dataDir: string;
let d: TestDaemon;
let outside: Outside | undefined;
let resolver: TestResolver | undefined;
/** www.allowed.test and exact.test; blocked.test; edge.cdn.test (behind cname.allowed.test). */
let allowedIp: string;
let otherIp: string;
let cdnIp: string;

before(async () => {
  dataDir = await makeDataDir();
  outside = await makeOutside(dataDir, 3);
  [allowedIp, otherIp, cdnIp] = outside.ips as [string, string, string];
  resolver = await startResolver({
    // A 1-second TTL: the address must stay allowed for the minimum (a minute) all the same.
    'www.allowed.test': [{ type: 'A', data: allowedIp, ttl: 1 }],
    'allowed.test': [{ type: 'A', data: allowedIp, ttl: 300 }],
    'exact.test': [{ type: 'A', data: allowedIp, ttl: 300 }],
    'blocked.test': [{ type: 'A', data: otherIp, ttl: 300 }],
    'cname.allowed.test': [{ type: 'CNAME', data: 'edge.cdn.test', ttl: 300 }],
    'edge.cdn.test': [{ type: 'A', data: cdnIp, ttl: 300 }],
  });
  writeFileSync(join(dataDir, 'config.json'), JSON.stringify({ dns_upstream: resolver.address }));
  d = await startDaemon(dataDir);
});

after(async () => {
  await d?.kill().catch(() => undefined);
  resolver?.close();
  outside?.close();
  if (dataDir) await cleanupDataDir(dataDir);
});

async function sh(app: string, id: string, script: string): Promise<string> {
  const r = await d.client.machines.exec(app, id, ['sh', '-c', script], { timeoutS: 30 });
  return r.stdout + r.stderr;
}

/** What `wget URL` prints inside the machine: the body, or wget's error and FAILED. */
async function get(app: string, id: string, url: string, opts: { header?: string; timeoutS?: number } = {}): Promise<string> {
  const header = opts.header ? `--header '${opts.header}' ` : '';
  return sh(app, id, `timeout ${opts.timeoutS ?? 10} wget -q -O - ${header}${url} 2>&1 || echo FAILED`);
}

const SHOULD_FAIL = { timeoutS: 2 };

/**
 * The egress sets of the daemon's table (one app has a bridge here): address → seconds of its
 * timeout, or (`expires`) of the time it has left.
 */
function egressSets(seconds: 'timeout' | 'expires' = 'timeout'): Map<string, number> {
  const table = JSON.parse(execFileSync('nft', ['-j', 'list', 'table', 'inet', firewallTable(networkTag(dataDir))], { encoding: 'utf8' })) as {
    nftables: Array<{ set?: { name: string; elem?: Array<{ elem: { val: string; timeout: number; expires: number } }> } }>;
  };
  const out = new Map<string, number>();
  for (const item of table.nftables) {
    if (!item.set?.name.startsWith('egress-')) continue;
    for (const e of item.set.elem ?? []) out.set(e.elem.val, e.elem[seconds]);
  }
  return out;
}

describe('egress by domain', () => {
  let id: string;

  it('lets a domains app reach the names it allows, and no address DNS did not give it', async () => {
    const created = await d.client.apps.create('dom', { settings: { egress: { policy: 'domains', allow: ['*.Allowed.test.', 'exact.test'] } } });
    assert.deepEqual(created.egress, { policy: 'domains', allow: ['*.allowed.test', 'exact.test'] }, 'patterns are kept lower case, without a trailing dot');
    id = (await d.client.machines.create('dom', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } })).id;

    assert.equal(await get('dom', id, 'http://www.allowed.test:8080/'), 'outside\n', 'the first connect after the lookup works');
    assert.equal(await get('dom', id, 'http://cname.allowed.test:8080/'), 'outside\n', 'an allowed name behind a CNAME');
    const [blocked, lookup, base, hardCoded, spoofedHost] = await Promise.all([
      get('dom', id, 'http://blocked.test:8080/', SHOULD_FAIL),
      sh('dom', id, 'nslookup blocked.test 2>&1; true'),
      get('dom', id, 'http://allowed.test:8080/', SHOULD_FAIL),
      get('dom', id, `http://${otherIp}:8080/`, SHOULD_FAIL),
      get('dom', id, `http://${otherIp}:8080/`, { header: 'Host: www.allowed.test', ...SHOULD_FAIL }),
    ]);
    assert.match(blocked, /FAILED/);
    assert.match(lookup, /REFUSED/, 'a name not allowed is refused');
    assert.match(base, /FAILED/, '*.allowed.test does not allow allowed.test itself');
    assert.match(hardCoded, /FAILED/, 'an address no allowed name resolved to gets nowhere');
    assert.match(spoofedHost, /FAILED/);
    assert.ok(!resolver!.asked.includes('blocked.test') && !resolver!.asked.includes('allowed.test'), 'names not allowed never leave the host');

    const set = egressSets();
    assert.deepEqual([...set.keys()].sort(), [allowedIp, cdnIp].sort(), 'only the answered addresses are in');
    assert.equal(set.get(allowedIp), 120, 'a 1-second TTL is held for the minute, put in for twice that');
    assert.equal(set.get(cdnIp), 600, 'twice the TTL of the answer otherwise');
  });

  it('rejects bad patterns with a code and a hint', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ policy: 'domains', allow: ['192.0.2.7'] }, /an address, not a name; list addresses with \{"policy": "cidrs"\}/],
      [{ policy: 'domains', allow: ['*'] }, /use \{"policy": "allow"\}/],
      [{ policy: 'domains', allow: ['api.*.github.com'] }, /not a whole first label/],
      [{ policy: 'domains', allow: ['*.com'] }, /a whole top-level domain/],
      [{ policy: 'domains', allow: ['bad name.com'] }, /label "bad name"/],
      [{ policy: 'domains', allow: ['db.internal'] }, /always resolve/],
      [{ policy: 'domains', allow: [] }, /egress\.allow/],
    ];
    for (const [egress, message] of cases) {
      const res = await http(d, 'PATCH', '/v1/apps/dom', { egress });
      assert.equal(res.status, 400, JSON.stringify(egress));
      assert.equal(res.body.code, 'validation_failed');
      assert.match(res.body.error, message);
      assert.ok(res.body.hint);
    }
  });

  it('applies a changed allowlist to running machines at once, forgetting what the old one let out', async () => {
    await d.client.apps.update('dom', { egress: { policy: 'domains', allow: ['blocked.test'] } });
    const [byOldAddress, byOldName] = await Promise.all([
      get('dom', id, `http://${allowedIp}:8080/`, SHOULD_FAIL),
      get('dom', id, 'http://www.allowed.test:8080/', SHOULD_FAIL),
    ]);
    assert.match(byOldAddress, /FAILED/, 'the set was emptied');
    assert.match(byOldName, /FAILED/);
    assert.equal(await get('dom', id, 'http://blocked.test:8080/'), 'outside\n');
    await d.client.apps.update('dom', { egress: { policy: 'domains', allow: ['*.allowed.test', 'exact.test'] } });
    assert.equal(await get('dom', id, 'http://exact.test:8080/'), 'outside\n');
  });

  it('keeps the policy, and what DNS let out, across a daemon restart, unless the policy changed meanwhile', async () => {
    const allow = ['*.allowed.test', 'exact.test'];
    await d.client.apps.update('dom', { egress: { policy: 'domains', allow: [...allow, 'blocked.test'] } });
    assert.equal(await get('dom', id, 'http://www.allowed.test:8080/'), 'outside\n');
    assert.equal(await get('dom', id, 'http://blocked.test:8080/'), 'outside\n');
    // A second on, an element carried over has less time left than one put in afresh.
    await new Promise((r) => setTimeout(r, 1100));
    const left = egressSets('expires');
    await d.kill();
    d = await startDaemon(dataDir);
    const carried = egressSets();
    assert.deepEqual([...carried.keys()].sort(), [allowedIp, otherIp].sort(), 'what DNS let out is there before anything is looked up');
    for (const [ip, timeoutS] of carried) assert.ok(timeoutS <= left.get(ip)!, `${ip} is carried over with its time left (${timeoutS} s of ${left.get(ip)} s), not learnt again`);
    const reached = await Promise.all([allowedIp, otherIp].map((ip) => get('dom', id, `http://${ip}:8080/`)));
    assert.deepEqual(reached, ['outside\n', 'outside\n'], 'addresses resolved before the restart are still allowed');

    // Killed between recording a new policy and applying it, the daemon comes back to a set
    // filled under the old one: none of it is let out, a name must be asked for again.
    await d.kill();
    const db = new DatabaseSync(join(dataDir, 'state.db'));
    db.prepare('UPDATE apps SET egress = ? WHERE name = ?').run(JSON.stringify({ policy: 'domains', allow }), 'dom');
    db.close();
    d = await startDaemon(dataDir);
    const [byOldAddress, other] = await Promise.all([
      get('dom', id, `http://${allowedIp}:8080/`, SHOULD_FAIL),
      get('dom', id, `http://${otherIp}:8080/`, SHOULD_FAIL),
    ]);
    assert.match(byOldAddress, /FAILED/, 'the set was filled under another policy');
    assert.match(other, /FAILED/, 'blocked.test was allowed under the policy before, not this one');
    assert.equal(await get('dom', id, 'http://www.allowed.test:8080/'), 'outside\n', 'a name this policy allows, asked again');
    assert.match(await sh('dom', id, 'nslookup blocked.test 2>&1; true'), /REFUSED/);
  });

  it("logs the machine's lookups, its connections with their bytes, and what its policy refused", async () => {
    const abort = new AbortController();
    const followed: EgressEvent[] = [];
    const following = (async () => {
      for await (const e of d.client.machines.followEgress('dom', id, { tail: 0, signal: abort.signal })) followed.push(e);
    })().catch(() => undefined);
    const since = new Date().toISOString();
    const body = await get('dom', id, 'http://www.allowed.test:8080/');
    assert.equal(body, 'outside\n');
    assert.match(await sh('dom', id, 'nslookup blocked.test 2>&1; true'), /REFUSED/);
    assert.match(await get('dom', id, `http://${otherIp}:8080/`, SHOULD_FAIL), /FAILED/);

    const to = (ip: string) => `${ip}:8080`;
    // This test's own: earlier tests made some of the same kinds. A connection the restart test
    // opened just after a restart may end only now, with no duration (no daemon saw it open): the
    // close wanted is one with a duration, which this test's connection has.
    const wanted = (all: EgressEvent[]) => {
      const events = all.filter((e) => e.time >= since);
      return {
        lookedUp: events.findLast((e) => e.kind === 'dns' && e.name === 'www.allowed.test' && e.type === 'A'),
        refused: events.findLast((e) => e.kind === 'dns' && e.name === 'blocked.test' && e.type === 'A'),
        opened: events.findLast((e) => e.kind === 'connect' && e.dst === to(allowedIp)),
        closed: events.findLast((e) => e.kind === 'close' && e.dst === to(allowedIp) && e.duration_ms !== undefined),
        denied: events.findLast((e) => e.kind === 'connect' && e.dst === to(otherIp)),
      };
    };
    // A connection's bytes come when conntrack lets go of it, a second or two after it closes.
    let found = wanted([]);
    const startedAt = Date.now();
    for (const deadline = Date.now() + 20_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 500))) {
      found = wanted((await d.client.machines.egress('dom', id)).events);
      if (Object.values(found).every(Boolean)) break;
    }
    assert.ok(Date.now() - startedAt < 10_000, `all there within ${Date.now() - startedAt} ms`);
    assert.deepEqual(found.lookedUp && { ...found.lookedUp, time: '' }, { kind: 'dns', time: '', name: 'www.allowed.test', type: 'A', verdict: 'allowed', rcode: 'NOERROR', answers: [allowedIp] });
    assert.deepEqual(found.refused && { ...found.refused, time: '' }, { kind: 'dns', time: '', name: 'blocked.test', type: 'A', verdict: 'refused', rcode: 'REFUSED', answers: [] });
    assert.deepEqual(found.opened && { ...found.opened, time: '' }, { kind: 'connect', time: '', proto: 'tcp', dst: to(allowedIp), verdict: 'allowed' });
    assert.deepEqual(found.denied && { ...found.denied, time: '' }, { kind: 'connect', time: '', proto: 'tcp', dst: to(otherIp), verdict: 'denied' });
    assert.ok(found.closed?.kind === 'close', 'the connection ended, with its bytes');
    const closed = found.closed as Extract<EgressEvent, { kind: 'close' }>;
    assert.ok(closed.bytes_out > 60 && closed.bytes_out < 2000, `a GET went out (${closed.bytes_out} bytes)`);
    assert.ok(closed.bytes_in > 'outside\n'.length + 60, `the answer came in (${closed.bytes_in} bytes)`);
    assert.ok(closed.packets_out >= 3 && closed.packets_in >= 2);
    assert.ok(closed.duration_ms! >= 0 && closed.duration_ms! <= Date.now() - Date.parse(since), `it lasted ${closed.duration_ms} ms, within this test`);
    assert.equal((await d.client.machines.egress('dom', id)).events.filter((e) => e.kind === 'connect' && e.dst === to(otherIp) && e.time >= since).length, 1, "a SYN resent is the same attempt");

    abort.abort();
    await following;
    assert.deepEqual(Object.values(wanted(followed)).map(Boolean), [true, true, true, true, true], 'followed as it happened');

    const r = spawnSync(HANGAR, ['machines', 'egress', id, '--app', 'dom'], { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: dataDir }, timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`dns +blocked\\.test A REFUSED`));
    assert.match(r.stdout, new RegExp(`connect +tcp ${otherIp.replace(/\./g, '\\.')}:8080 DENIED`));
    assert.match(r.stdout, /close +tcp \S+:8080 out \d+ B in \d+ B after/);
  });

  it("logs a machine's lookups as its own on an address a destroyed machine held just before", async () => {
    const make = () => d.client.machines.create('dom', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
    const lookedUp = async (machineId: string) => {
      for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
        if ((await d.client.machines.egress('dom', machineId)).events.some((e) => e.kind === 'dns' && e.name === 'exact.test')) return true;
      }
      return false;
    };
    const first = await make();
    await sh('dom', first.id, 'nslookup exact.test 2>&1; true');
    assert.ok(await lookedUp(first.id));
    await d.client.machines.destroy('dom', first.id, { force: true });
    const next = await make();
    try {
      assert.equal(next.private_ip, first.private_ip, 'the lowest free address is given again at once');
      await sh('dom', next.id, 'nslookup exact.test 2>&1; true');
      assert.ok(await lookedUp(next.id), 'the lookup is in the new machine\'s log');
    } finally {
      await d.client.machines.destroy('dom', next.id, { force: true });
    }
  });

  it('sets a domain allowlist from the CLI', () => {
    const hangar = (...args: string[]) => {
      const r = spawnSync(HANGAR, args, { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: dataDir }, timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    const created = JSON.parse(hangar('apps', 'create', 'dom-cli', '--egress', 'registry.npmjs.org,*.github.com', '--json'));
    assert.deepEqual(created.egress, { policy: 'domains', allow: ['registry.npmjs.org', '*.github.com'] });
    assert.match(hangar('apps', 'list'), /^dom-cli\s+0\s+registry\.npmjs\.org,\*\.github\.com\s/m);
  });

  it('keeps an open connection across a daemon restart, and cuts it when the policy changes', async () => {
    const listener = await listenIn(outside!.ns, 'tcp', allowedIp, 9000);
    try {
      // A connection that sends a line every 200 ms for as long as it is let.
      await sh('dom', id, '(while true; do echo ping; sleep 0.2; done | nc www.allowed.test 9000) >/dev/null 2>&1 &');
      const received = () => listener.seen.length;
      const growsWithin = async (ms: number) => {
        const before = received();
        for (const deadline = Date.now() + ms; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) if (received() > before) return true;
        return false;
      };
      assert.ok(await growsWithin(5000), 'the connection is open');
      await d.kill();
      d = await startDaemon(dataDir);
      assert.ok(await growsWithin(3000), 'it lives on across the restart (same policy, same mark, its address carried over)');
      await d.client.apps.update('dom', { egress: { policy: 'domains', allow: ['exact.test'] } });
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(!(await growsWithin(2000)), 'a new policy checks open connections too: its address is not in the new set');
    } finally {
      listener.close();
      await sh('dom', id, 'pkill nc; true').catch(() => undefined);
    }
  });
});
