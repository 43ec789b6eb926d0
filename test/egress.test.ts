import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DatabaseSync } from 'node:sqlite';
import packet from 'dns-packet';
import { cleanupDataDir, HANGAR, http, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { makeOutside, startResolver, type Outside, type TestResolver } from './helpers/outside-net.ts';
import { netnsName, networkTag } from '../src/network/names.ts';

// Egress per app, seen from inside machines. "Outside" is a network namespace this test makes
// (helpers/outside-net.ts) with two addresses and one in the link-local range, an httpd on each;
// machine traffic reaches it only through the host's NAT. A resolver on loopback stands in for
// the host's DNS. Nothing else is addressed.

let dataDir: string;
let d: TestDaemon;
let outside: Outside | undefined;
let resolver: TestResolver | undefined;
let hostService: Server | undefined;
let hostPort: number;
/** The host's end of the veth (a host address), and the outside namespace's two addresses. */
let hostIp: string;
let listedIp: string;
let unlistedIp: string;
/** An outside address in the link-local range, where clouds serve instance metadata. */
let metadataIp: string;
let apiPort: number;

before(async () => {
  dataDir = await makeDataDir();
  outside = await makeOutside(dataDir, 2);
  ({ hostIp, metadataIp } = outside);
  [listedIp, unlistedIp] = outside.ips as [string, string];
  // The host's resolver, as far as machines can tell: outside.test is the outside namespace.
  resolver = await startResolver({ 'outside.test': [{ type: 'A', data: listedIp, ttl: 5 }] });
  writeFileSync(join(dataDir, 'config.json'), JSON.stringify({ dns_upstream: resolver.address }));

  // A data dir from before app settings: its apps get the defaults.
  const db = new DatabaseSync(join(dataDir, 'state.db'));
  db.exec('CREATE TABLE apps (name TEXT PRIMARY KEY, id TEXT NOT NULL, network TEXT NOT NULL, created_at TEXT NOT NULL)');
  db.prepare('INSERT INTO apps VALUES (?, ?, ?, ?)').run('legacy', 'legacy-id', 'default', new Date().toISOString());
  db.close();

  // A service on every host address: machines must not reach it, whatever their egress.
  hostService = createServer((s) => s.end('host secret\n')).listen(0, '0.0.0.0');
  await new Promise((r) => hostService!.once('listening', r));
  hostPort = (hostService.address() as { port: number }).port;

  // The API listens on a host address machines could route to, were the firewall not there.
  d = await startDaemon(dataDir, ['--api-listen', `${hostIp}:0`]);
  apiPort = Number(new URL(d.url).port);
});

after(async () => {
  hostService?.close();
  await d?.kill().catch(() => undefined);
  resolver?.close();
  outside?.close();
  if (dataDir) await cleanupDataDir(dataDir);
});

const execFileAsync = promisify(execFile);

function framed(msg: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(msg.length);
  return Buffer.concat([length, msg]);
}

/**
 * Asks `server`:53 over TCP from inside the machine's network namespace (busybox's nslookup
 * only speaks UDP), and gives the A records.
 */
async function askOverTcp(machineId: string, server: string, name: string): Promise<{ rcode: string; ips: string[] }> {
  const query = framed(packet.encode({ id: 7, type: 'query', flags: packet.RECURSION_DESIRED, questions: [{ name, type: 'A', class: 'IN' }] }));
  const client = `const s = require('node:net').connect(53, ${JSON.stringify(server)});
let got = Buffer.alloc(0);
s.on('data', (c) => { got = Buffer.concat([got, c]); if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) { process.stdout.write(got.subarray(2, 2 + got.readUInt16BE(0)).toString('base64')); s.destroy(); } });
s.on('error', (e) => { console.error(e.message); process.exit(1); });
s.write(Buffer.from(${JSON.stringify(query.toString('base64'))}, 'base64'));
setTimeout(() => { console.error('no answer'); process.exit(1); }, 5000).unref();`;
  const ns = netnsName(networkTag(dataDir), machineId);
  // Not execFileSync: the upstream resolver answering in this process must go on meanwhile.
  const { stdout: out } = await execFileAsync('ip', ['netns', 'exec', ns, process.execPath, '-e', client], { encoding: 'utf8' });
  type Record = { name: string; type: string; data: unknown };
  const answer = packet.decode(Buffer.from(out, 'base64')) as unknown as { rcode: string; answers?: Record[] };
  return { rcode: answer.rcode, ips: (answer.answers ?? []).filter((r) => r.type === 'A').map((r) => r.data as string) };
}

async function machine(app: string, cmd: string[] = ['sleep', 'inf']) {
  return d.client.machines.create(app, { config: { image: 'hangar/busybox', init: { cmd } } });
}

async function sh(app: string, id: string, script: string): Promise<string> {
  const r = await d.client.machines.exec(app, id, ['sh', '-c', script], { timeoutS: 30 });
  return r.stdout + r.stderr;
}

/**
 * What `wget URL` prints inside the machine: the body, or wget's error and FAILED. What should
 * fail gets a short time (dropped packets make it wait that long), the rest a generous one.
 */
async function get(app: string, id: string, url: string, opts: { header?: string; timeoutS?: number } = {}): Promise<string> {
  const header = opts.header ? `--header '${opts.header}' ` : '';
  return sh(app, id, `timeout ${opts.timeoutS ?? 10} wget -q -O - ${header}${url} 2>&1 || echo FAILED`);
}

const SHOULD_FAIL = { timeoutS: 2 };

describe('egress', () => {
  let allowId: string;

  it('lets an app with egress allow reach the outside through NAT, by address and by name', async () => {
    const created = await d.client.apps.create('eg-allow');
    assert.deepEqual([created.egress, created.autostop_idle, created.nested_namespaces], [{ policy: 'allow' }, '5m', false], 'the defaults');
    allowId = (await machine('eg-allow')).id;
    assert.equal(await get('eg-allow', allowId, `http://${listedIp}:8080/`), 'outside\n');
    assert.equal(await get('eg-allow', allowId, 'http://outside.test:8080/'), 'outside\n', "names outside .internal come from the host's resolver");
    assert.match(await get('eg-allow', allowId, `http://${metadataIp}:8080/`, SHOULD_FAIL), /FAILED/, 'link-local (cloud metadata) addresses are not the outside world');
    const legacy = await d.client.apps.get('legacy');
    assert.deepEqual([legacy.egress, legacy.autostop_idle, legacy.nested_namespaces], [{ policy: 'allow' }, '5m', false], 'an app from an older state.db has the defaults');
  });

  it('answers DNS over TCP as well as UDP, for its own names and for the outside, with NXDOMAIN for unknown names', async () => {
    const { private_ip } = await d.client.machines.get('eg-allow', allowId);
    const gateway = private_ip.replace(/\.\d+$/, '.1');
    const askedOverTcp = resolver!.askedOverTcp.length;
    assert.deepEqual(await askOverTcp(allowId, gateway, `${allowId}.vm.eg-allow.internal`), { rcode: 'NOERROR', ips: [private_ip] });
    assert.deepEqual((await askOverTcp(allowId, gateway, '_api.internal')).ips, [gateway]);
    assert.deepEqual(await askOverTcp(allowId, gateway, 'outside.test'), { rcode: 'NOERROR', ips: [listedIp] });
    assert.deepEqual(resolver!.askedOverTcp.slice(askedOverTcp), ['outside.test'], 'asked upstream over TCP too, and only for the outside name');
    assert.equal((await askOverTcp(allowId, gateway, 'nowhere.internal')).rcode, 'NXDOMAIN');
    assert.match(await sh('eg-allow', allowId, 'nslookup nowhere.internal 2>&1; true'), /NXDOMAIN/, 'and over UDP');
  });

  it('keeps an app with egress deny inside its network, with its DNS and _api.internal still there', async () => {
    await d.client.apps.create('eg-deny', { settings: { egress: { policy: 'deny' }, autostop_idle: '90s' } });
    const web = await machine('eg-deny', ['sh', '-c', 'echo mate > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']);
    const m = await machine('eg-deny');
    const [outside, byName, mate] = await Promise.all([
      get('eg-deny', m.id, `http://${listedIp}:8080/`, SHOULD_FAIL),
      sh('eg-deny', m.id, 'nslookup outside.test 2>&1; true'),
      get('eg-deny', m.id, `http://${web.id}.vm.eg-deny.internal:8080/`),
    ]);
    assert.match(outside, /FAILED/);
    assert.doesNotMatch(byName, new RegExp(listedIp.replace(/\./g, '\\.')), 'no names from outside either');
    assert.match(byName, /REFUSED/);
    assert.equal(mate, 'mate\n', 'machines of the app still reach each other by name');

    const noToken = await get('eg-deny', m.id, 'http://_api.internal:4280/v1/apps');
    assert.match(noToken, /401 Unauthorized/);
    const withToken = JSON.parse(await get('eg-deny', m.id, 'http://_api.internal:4280/v1/apps', { header: `Authorization: Bearer ${d.token}` }));
    const listed = withToken.apps.find((a: { name: string }) => a.name === 'eg-deny');
    assert.deepEqual([listed.egress, listed.autostop_idle], [{ policy: 'deny' }, '1m30s']);
  });

  it('lets an app with a CIDR allowlist reach the listed networks only', async () => {
    await d.client.apps.create('eg-cidrs', { settings: { egress: { policy: 'cidrs', cidrs: [listedIp, '10.0.0.0/8', metadataIp] } } });
    const m = await machine('eg-cidrs');
    const [listed, unlisted, linkLocal] = await Promise.all([
      get('eg-cidrs', m.id, `http://${listedIp}:8080/`),
      get('eg-cidrs', m.id, `http://${unlistedIp}:8080/`, SHOULD_FAIL),
      get('eg-cidrs', m.id, `http://${metadataIp}:8080/`),
    ]);
    assert.equal(listed, 'outside\n');
    assert.match(unlisted, /FAILED/);
    assert.equal(linkLocal, 'outside\n', 'a link-local address the list names is reachable');
  });

  it("applies a changed policy to the app's running machines at once", async () => {
    /** Whether the machine reaches the outside's two addresses; given up on sooner where it should not. */
    const reach = async (expected: [boolean, boolean]) =>
      (await Promise.all([listedIp, unlistedIp].map((ip, i) => get('eg-allow', allowId, `http://${ip}:8080/`, expected[i] ? {} : SHOULD_FAIL)))).map((out) => out === 'outside\n');
    const denied = await d.client.apps.update('eg-allow', { egress: { policy: 'deny' } });
    assert.deepEqual(denied.egress, { policy: 'deny' });
    assert.deepEqual(await reach([false, false]), [false, false]);
    await d.client.apps.update('eg-allow', { egress: { policy: 'cidrs', cidrs: [`${unlistedIp}/32`] } });
    assert.deepEqual(await reach([false, true]), [false, true]);
    const allowed = await d.client.apps.update('eg-allow', { egress: { policy: 'allow' }, autostop_idle: { 'time.Duration': 30e9 } });
    assert.deepEqual([allowed.egress, allowed.autostop_idle], [{ policy: 'allow' }, '30s']);
    assert.deepEqual(await reach([true, true]), [true, true]);
    assert.deepEqual((await d.client.apps.get('eg-allow')).egress, { policy: 'allow' });
  });

  it('sets and changes the settings from the CLI', () => {
    const hangar = (...args: string[]) => {
      const r = spawnSync(HANGAR, args, { encoding: 'utf8', env: { ...process.env, HANGAR_DATA_DIR: dataDir }, timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    const created = JSON.parse(hangar('apps', 'create', 'eg-cli', '--egress', `${listedIp},10.0.0.0/8`, '--autostop-idle', '10m', '--json'));
    assert.deepEqual([created.egress, created.autostop_idle], [{ policy: 'cidrs', cidrs: [listedIp, '10.0.0.0/8'] }, '10m']);
    assert.match(hangar('apps', 'update', 'eg-cli', '--egress', 'deny'), /updated app eg-cli \(egress deny, autostop idle 10m, nested namespaces off\)/);
    assert.match(hangar('apps', 'list'), /^eg-cli\s+0\s+deny\s+10m\s+off$/m);
  });

  it('rejects bad settings with a code and a hint', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ egress: { policy: 'cidrs', cidrs: ['10.1.2.3/8'] } }, /host bits set; the network is 10\.0\.0\.0\/8/],
      [{ egress: { policy: 'cidrs', cidrs: [] } }, /egress\.cidrs/],
      [{ egress: { policy: 'maybe' } }, /egress/],
      [{ autostop_idle: '0s' }, /autostop_idle/],
      [{ autostop: '5m' }, /autostop/],
    ];
    for (const [body, message] of cases) {
      const res = await http(d, 'PATCH', '/v1/apps/eg-allow', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.code, 'validation_failed');
      assert.match(res.body.error, message);
      assert.ok(res.body.hint);
    }
    assert.equal((await http(d, 'PATCH', '/v1/apps/nope', { egress: { policy: 'deny' } })).body.code, 'app_not_found');
  });

  it("keeps machines off the host's own services, other apps' machines and other apps' gateways", async () => {
    const gateway = (await d.client.machines.get('eg-allow', allowId)).private_ip.replace(/\.\d+$/, '.1');
    const [denyWeb, denyMachine] = await d.client.machines.list('eg-deny');
    const otherGateway = denyMachine!.private_ip.replace(/\.\d+$/, '.1');
    const bearer = { header: `Authorization: Bearer ${d.token}`, ...SHOULD_FAIL };
    const [hostByGateway, hostByOwnAddress, apiByOwnAddress, apiByGateway, otherMachine, otherApi, otherDns] = await Promise.all([
      sh('eg-allow', allowId, `nc -w 2 ${gateway} ${hostPort} </dev/null 2>&1`),
      sh('eg-allow', allowId, `nc -w 2 ${hostIp} ${hostPort} </dev/null 2>&1`),
      get('eg-allow', allowId, `http://${hostIp}:${apiPort}/v1/apps`, bearer),
      get('eg-allow', allowId, `http://${gateway}:${apiPort}/v1/apps`, bearer),
      get('eg-allow', allowId, `http://${denyWeb!.private_ip}:8080/`, SHOULD_FAIL),
      get('eg-allow', allowId, `http://${otherGateway}:4280/v1/apps`, bearer),
      sh('eg-allow', allowId, `timeout 2 nslookup ${denyMachine!.id}.vm.eg-deny.internal ${otherGateway} 2>&1; true`),
    ]);
    assert.doesNotMatch(hostByGateway + hostByOwnAddress, /host secret/, 'a host service on every address stays out of reach');
    assert.match(apiByOwnAddress, /FAILED/, 'the API on its real listen address is out of reach');
    assert.match(apiByGateway, /FAILED/);
    assert.match(otherMachine, /FAILED/, "egress allow does not open other apps' machines");
    assert.match(otherApi, /FAILED/, "another app's _api.internal does not answer");
    assert.doesNotMatch(otherDns, new RegExp(denyMachine!.private_ip.replace(/\./g, '\\.')), "another app's gateway does not answer names");
  });

  it('keeps every policy and _api.internal across a daemon restart', async () => {
    await d.kill();
    d = await startDaemon(dataDir, ['--api-listen', `${hostIp}:0`]);
    const [denyMachine] = (await d.client.machines.list('eg-deny')).slice(-1);
    const cidrsMachine = (await d.client.machines.list('eg-cidrs'))[0]!;
    const [denied, listed, unlisted, api] = await Promise.all([
      get('eg-deny', denyMachine!.id, `http://${listedIp}:8080/`, SHOULD_FAIL),
      get('eg-cidrs', cidrsMachine.id, `http://${listedIp}:8080/`),
      get('eg-cidrs', cidrsMachine.id, `http://${unlistedIp}:8080/`, SHOULD_FAIL),
      get('eg-deny', denyMachine!.id, 'http://_api.internal:4280/v1/apps/eg-deny', { header: `Authorization: Bearer ${d.token}` }),
    ]);
    assert.deepEqual([denied.includes('FAILED'), listed, unlisted.includes('FAILED')], [true, 'outside\n', true]);
    assert.equal(JSON.parse(api).name, 'eg-deny');
  });
});
