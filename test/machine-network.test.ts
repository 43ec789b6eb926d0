import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { cleanupDataDir, makeDataDir, startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { macOf, netnsName, networkTag } from '../src/network/names.ts';
import { waitFor } from './helpers/wait.ts';

// Private machine networks: an address per machine from its app's subnet, kept across
// stop/start and daemon restarts, one app's machines reaching each other and nothing else.

let dataDir: string;
let d: TestDaemon;
let hostService: Server;
let hostPort: number;
let webIp: string;
let webId: string;

before(async () => {
  dataDir = await makeDataDir();
  d = await startDaemon(dataDir);
  await d.client.apps.create('net-a');
  await d.client.apps.create('net-b');
  // A host service on every address: machines must not reach it through their gateway.
  hostService = createServer((s) => s.end('host secret\n')).listen(0, '0.0.0.0');
  await new Promise((r) => hostService.once('listening', r));
  hostPort = (hostService.address() as { port: number }).port;
});
after(async () => {
  hostService?.close();
  await d?.kill().catch(() => undefined);
  await cleanupDataDir(dataDir);
});

const netnsPath = (id: string) => `/run/netns/${netnsName(networkTag(dataDir), id)}`;

async function machine(app: string, cmd: string[] = ['sleep', 'inf']) {
  return d.client.machines.create(app, { config: { image: 'hangar/busybox', init: { cmd } } });
}

async function sh(app: string, id: string, script: string): Promise<{ code: number; out: string }> {
  const r = await d.client.machines.exec(app, id, ['sh', '-c', script], { timeoutS: 20 });
  return { code: r.exit_code, out: r.stdout + r.stderr };
}

/** What an HTTP GET from inside a machine gets back (the status line), or '' when it cannot connect. */
async function httpFrom(app: string, id: string, ip: string, port: number): Promise<string> {
  const r = await sh(app, id, `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} ${port} | head -1`);
  return r.out.split('\n').find((l) => l.startsWith('HTTP/') || l.startsWith('host')) ?? '';
}

describe('machine networking', () => {
  it('gives machines of one app addresses from its subnet, and they reach each other', async () => {
    const web = await machine('net-a', ['sh', '-c', 'echo ok > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']);
    webIp = web.private_ip;
    const client = await machine('net-a');
    assert.match(web.private_ip, new RegExp(`^172\\.${process.env.HANGAR_TEST_NET || 29}\\.\\d+\\.2$`));
    const subnet = web.private_ip.replace(/\.2$/, '');
    assert.equal(client.private_ip, `${subnet}.3`);
    const inside = await sh('net-a', client.id, 'ip -4 -o addr show eth0; ip route; echo $FLY_PRIVATE_IP');
    assert.match(inside.out, new RegExp(`inet ${client.private_ip.replace(/\./g, '\\.')}/24`));
    assert.match(inside.out, new RegExp(`default via ${subnet.replace(/\./g, '\\.')}\\.1`));
    assert.match(inside.out, new RegExp(`^${client.private_ip.replace(/\./g, '\\.')}$`, 'm'));
    assert.match(await httpFrom('net-a', client.id, web.private_ip, 8080), /^HTTP\/1\.[01] 200/);
    webId = web.id;

    // By name, through the app's gateway: <id>.vm.<app>.internal, <app>.internal, and the bare id.
    const byName = await sh('net-a', client.id, `nslookup ${web.id}.vm.net-a.internal; nslookup net-a.internal; cat /etc/resolv.conf`);
    assert.match(byName.out, new RegExp(`Name:\\s+${web.id}\\.vm\\.net-a\\.internal\\s+Address: ${web.private_ip.replace(/\./g, '\\.')}`));
    assert.match(byName.out, new RegExp(`Name:\\s+net-a\\.internal\\s+Address: ${client.private_ip.replace(/\./g, '\\.')}`));
    assert.match(byName.out, new RegExp(`nameserver ${subnet.replace(/\./g, '\\.')}\\.1`));
    assert.match(await httpFrom('net-a', client.id, web.id, 8080), /^HTTP\/1\.[01] 200/, 'the bare machine id resolves');
  });

  it('keeps other apps and the host out, and lets the host reach machines', async () => {
    const web = { private_ip: webIp };
    const other = await machine('net-b');
    assert.notEqual(other.private_ip.split('.')[2], web.private_ip.split('.')[2], 'another app, another subnet');
    assert.equal(await httpFrom('net-b', other.id, web.private_ip, 8080), '', 'app b cannot reach app a');
    const lookup = await sh('net-b', other.id, `nslookup ${webId}.vm.net-a.internal`);
    assert.doesNotMatch(lookup.out, new RegExp(web.private_ip.replace(/\./g, '\\.')), "app b cannot resolve app a's names");
    const gateway = other.private_ip.replace(/\.\d+$/, '.1');
    const probe = await sh('net-b', other.id, `nc -w 2 ${gateway} ${hostPort} </dev/null`);
    assert.doesNotMatch(probe.out, /host secret/, 'a machine cannot reach host services through its gateway');
    // As host root in the machine's namespace: the machine's own root has no raw socket for ping.
    const ping = spawnSync('ip', ['netns', 'exec', netnsName(networkTag(dataDir), other.id), 'busybox', 'ping', '-c', '1', '-W', '2', gateway]);
    assert.equal(ping.status, 0, 'the gateway answers ping');
    const fromHost = execFileSync('sh', ['-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 ${web.private_ip} 8080 | head -1`], { encoding: 'utf8' });
    assert.match(fromHost, /^HTTP\/1\.[01] 200/, 'the host (and so its proxy) reaches machines');
  });

  it('keeps the address and namespace across stop/start and a daemon restart, and frees them at destroy', async () => {
    const m = await machine('net-a');
    const ns = statSync(netnsPath(m.id)).ino;
    await d.client.machines.stop('net-a', m.id);
    await d.client.machines.wait('net-a', m.id, 'stopped');
    assert.ok(existsSync(netnsPath(m.id)), 'a stopped machine keeps its namespace');
    await d.client.machines.start('net-a', m.id);
    assert.equal(statSync(netnsPath(m.id)).ino, ns, 'start joins the namespace it had; it makes no new one');
    assert.equal((await d.client.machines.get('net-a', m.id)).private_ip, m.private_ip);

    await d.kill();
    d = await startDaemon(dataDir);
    assert.match((await sh('net-a', m.id, 'ip -4 -o addr show eth0')).out, new RegExp(m.private_ip.replace(/\./g, '\\.')));
    assert.match((await sh('net-a', m.id, `nslookup ${m.id}.vm.net-a.internal`)).out, new RegExp(`Address: ${m.private_ip.replace(/\./g, '\\.')}`), 'names are served again after a restart');

    // A host reboot takes namespaces away; the next start makes it again with the same address.
    await d.client.machines.stop('net-a', m.id);
    await d.client.machines.wait('net-a', m.id, 'stopped');
    execFileSync('ip', ['netns', 'del', netnsName(networkTag(dataDir), m.id)]);
    await d.client.machines.start('net-a', m.id);
    assert.match((await sh('net-a', m.id, 'ip -4 -o addr show eth0')).out, new RegExp(m.private_ip.replace(/\./g, '\\.')));

    await d.client.machines.destroy('net-a', m.id, { force: true });
    assert.ok(!existsSync(netnsPath(m.id)), 'destroy removes the namespace');
    const next = await machine('net-a');
    assert.equal(next.private_ip, m.private_ip, 'a destroyed machine frees its address');
  });

  it('makes the next namespace ahead, set up as one made on the spot; a killed daemon\'s is swept', async () => {
    const readyPrefix = netnsName(networkTag(dataDir), 'r');
    const ready = () => readdirSync('/run/netns').filter((n) => n.startsWith(readyPrefix));
    const [stale] = await waitFor(async () => (ready().length === 1 ? ready() : undefined), 10_000, 'a namespace made ahead');
    await d.kill();
    d = await startDaemon(dataDir);
    const onTheSpot = await machine('net-a');
    const made = await waitFor(async () => (ready().length === 1 && ready()[0] !== stale ? ready()[0] : undefined), 10_000, 'the stale namespace swept, a new one made');
    const taken = await machine('net-a');
    assert.ok(!ready().includes(made!), 'the create took the namespace made ahead');
    assert.ok(existsSync(netnsPath(taken.id)));

    // Everything the machine sees of its network, with its own address and MAC written the same for both.
    const settings = async (m: { id: string; private_ip: string }) => {
      const script = 'ip -o link show; ip -4 -o addr show; ip route; ip neigh; cd /proc/sys/net; cat ipv6/conf/eth0/disable_ipv6 ipv4/ip_unprivileged_port_start ipv4/ping_group_range';
      const { code, out } = await sh('net-a', m.id, script);
      assert.equal(code, 0, out);
      assert.ok(out.includes(macOf(m.private_ip)), `eth0 has the MAC of ${m.private_ip}: ${out}`);
      return out.replaceAll(macOf(m.private_ip), 'MAC').replaceAll(m.private_ip, 'IP').replace(/^\d+: /gm, '').replace(/@if\d+/g, '@if');
    };
    const expected = await settings(onTheSpot);
    assert.match(expected, /^1\n0\n/m, 'IPv6 off, low ports open to its users');
    assert.equal(await settings(taken), expected);
    // The machine's user namespace maps none of the groups it names: read it from the host.
    const pingRange = (m: { id: string }) => execFileSync('ip', ['netns', 'exec', netnsName(networkTag(dataDir), m.id), 'cat', '/proc/sys/net/ipv4/ping_group_range'], { encoding: 'utf8' });
    assert.deepEqual([pingRange(onTheSpot), pingRange(taken)].map((r) => r.trim().split(/\s+/)), [['0', '2147483647'], ['0', '2147483647']], 'ping open to its users');
    assert.match(await httpFrom('net-a', taken.id, webIp, 8080), /^HTTP\/1\.[01] 200/, 'it reaches its app');
    await Promise.all([onTheSpot, taken].map((m) => d.client.machines.destroy('net-a', m.id, { force: true })));
  });

  it('removes an app\'s bridge with the app', async () => {
    const m = await machine('net-b');
    const subnetIndex = Number(m.private_ip.split('.')[2]) % 16;
    const bridge = `hgb-${networkTag(dataDir)}-${subnetIndex}`;
    assert.ok(existsSync(`/sys/class/net/${bridge}`), `${bridge} exists`);
    await d.client.apps.delete('net-b');
    assert.ok(!existsSync(`/sys/class/net/${bridge}`), 'the bridge went with the app');
  });
});
