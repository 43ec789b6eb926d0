import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import packet from 'dns-packet';
import { cleanupDataDir, HANGAR, makeDataDir, startDaemon, testMachineCidr, withDaemon, type TestDaemon } from './helpers/daemon.ts';
import { listenIn, quiet, rootIn, sendUdpFrom } from './helpers/netns-probe.ts';
import { bridgePrefix, firewallTable, macOf, netnsName, networkTag } from '../src/network/names.ts';

// Network containment, tried as a hostile machine would: root inside a machine's namespace (what a
// machine with CAP_NET_RAW can do with raw sockets, done here with `ip netns exec`) forging
// another machine's or an outside address, ARP-claiming its gateway, using IPv6, probing host
// addresses; then one daemon per data dir and per machine range, and what a daemon leaves behind.
// Traffic goes only to namespaces this test (or its daemon) made: "outside" is a namespace joined
// to the host by a veth with addresses from the benchmark range 198.18.0.0/15.

let dataDir: string;
let d: TestDaemon;
let tag: string;
let outsideNs = '';
let hostVeth = '';
let hostIp: string;
let outsideIp: string;
type M = { id: string; private_ip: string; app: string };
let evil: M; // app `spoof-evil`, egress deny: the attacker
let evilPeer: M; // a second machine of the attacker's app
let victim: M; // app `spoof-victim`
let leaky: M; // app `spoof-leaky`, egress allow

const ns = (m: M) => netnsName(tag, m.id);
const gatewayOf = (m: M) => m.private_ip.replace(/\.\d+$/, '.1');

async function machine(app: string): Promise<M> {
  const m = await d.client.machines.create(app, { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
  return { id: m.id, private_ip: m.private_ip, app };
}

async function sh(m: M, script: string): Promise<{ code: number; out: string }> {
  const r = await d.client.machines.exec(m.app, m.id, ['sh', '-c', script], { timeoutS: 20 });
  return { code: r.exit_code, out: r.stdout + r.stderr };
}

before(async () => {
  dataDir = await makeDataDir();
  tag = networkTag(dataDir);
  const n = Number.parseInt(tag, 16);
  const net = `198.19.${n % 256}.${8 * ((n >> 8) % 32)}`.split('.').map(Number);
  [hostIp, outsideIp] = [1, 2].map((h) => [...net.slice(0, 3), net[3]! + h].join('.')) as [string, string];
  outsideNs = `hgt-${tag}-cout`;
  hostVeth = `hgtc-${tag}`;
  execFileSync('sh', ['-c', `set -e
ip netns add ${outsideNs}
ip link add ${hostVeth} type veth peer name eth0 netns ${outsideNs}
ip addr add ${hostIp}/29 dev ${hostVeth}
ip link set ${hostVeth} up
ip -n ${outsideNs} addr add ${outsideIp}/29 dev eth0
ip -n ${outsideNs} link set lo up
ip -n ${outsideNs} link set eth0 up`]);
  d = await startDaemon(dataDir);
  await d.client.apps.create('spoof-evil', { settings: { egress: { policy: 'deny' } } });
  await d.client.apps.create('spoof-victim');
  await d.client.apps.create('spoof-leaky');
  evil = await machine('spoof-evil');
  evilPeer = await machine('spoof-evil');
  victim = await machine('spoof-victim');
  leaky = await machine('spoof-leaky');
});

after(async () => {
  await d?.kill().catch(() => undefined);
  if (hostVeth) quiet('ip', ['link', 'del', hostVeth]);
  if (outsideNs) quiet('ip', ['netns', 'del', outsideNs]);
  if (dataDir) await cleanupDataDir(dataDir);
});

const dnsQuery = packet.encode({ id: 7, type: 'query', flags: packet.RECURSION_DESIRED, questions: [{ name: '_api.internal', type: 'A', class: 'IN' }] });

describe('a machine forging its source address', () => {
  it("gets no DNS answer sent into another app's machine, even from a deny app", async () => {
    const listener = await listenIn(ns(victim), 'udp', victim.private_ip, 5353);
    try {
      rootIn(ns(evil), `ip addr add ${victim.private_ip}/32 dev eth0`);
      const forged = sendUdpFrom(ns(evil), victim.private_ip, 5353, gatewayOf(evil), 53, dnsQuery);
      // The same query from the machine's own address is answered: the path itself works.
      const genuine = sendUdpFrom(ns(evil), evil.private_ip, 5354, gatewayOf(evil), 53, dnsQuery);
      assert.deepEqual(forged, []);
      assert.ok(genuine.includes(gatewayOf(evil)), `the gateway answers the machine's own address: ${JSON.stringify(genuine)}`);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(listener.seen, [], 'nothing reached the other app');
    } finally {
      listener.close();
      quiet('ip', ['netns', 'exec', ns(evil), 'ip', 'addr', 'del', `${victim.private_ip}/32`, 'dev', 'eth0']);
    }
  });

  it('does not get a forged source out of the host, NATed or not', async () => {
    const listener = await listenIn(outsideNs, 'udp', outsideIp, 9999);
    const forgedIp = outsideIp.replace(/^198\.19\./, '198.18.');
    try {
      rootIn(ns(leaky), `ip addr add ${forgedIp}/32 dev eth0`);
      sendUdpFrom(ns(leaky), leaky.private_ip, 4001, outsideIp, 9999, Buffer.from('genuine'), 3, 100);
      sendUdpFrom(ns(leaky), forgedIp, 4000, outsideIp, 9999, Buffer.from('forged'), 3, 100);
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(listener.seen.some((s) => s.data === 'genuine' && s.from === hostIp), `the machine's own traffic leaves, NATed: ${JSON.stringify(listener.seen)}`);
      assert.deepEqual(listener.seen.filter((s) => s.data === 'forged'), [], 'the forged source never left');
      assert.deepEqual(listener.seen.filter((s) => s.from !== hostIp), [], 'nothing left un-NATed');
    } finally {
      listener.close();
      quiet('ip', ['netns', 'exec', ns(leaky), 'ip', 'addr', 'del', `${forgedIp}/32`, 'dev', 'eth0']);
    }
  });

  it('has strict reverse-path filtering on its bridges', () => {
    const bridges = readdirSync('/sys/class/net').filter((n) => n.startsWith(bridgePrefix(tag)));
    assert.ok(bridges.length >= 3, bridges.join(' '));
    for (const b of bridges) assert.equal(readFileSync(`/proc/sys/net/ipv4/conf/${b}/rp_filter`, 'utf8').trim(), '1', b);
  });
});

describe('a machine claiming its gateway over ARP', () => {
  it("does not capture what another machine of its app sends to _api.internal", async () => {
    const gateway = gatewayOf(evil);
    // The peer has talked to its gateway before, so it has a neighbour entry a forged ARP would move.
    await sh(evilPeer, `ping -c 1 -W 2 ${gateway}`);
    // Root in its namespace (busybox's arping in the machine cannot bind a foreign -s; a raw
    // socket could): own the gateway's address, announce it and answer its ARP, listen on its API port.
    rootIn(ns(evil), `ip addr add ${gateway}/32 dev eth0`);
    const capture = await listenIn(ns(evil), 'tcp', gateway, 4280);
    try {
      rootIn(ns(evil), `busybox arping -U -c 3 -I eth0 -s ${gateway} ${gateway} >/dev/null 2>&1; busybox arping -A -c 2 -I eth0 -s ${gateway} ${gateway} >/dev/null 2>&1; true`);
      const call = await sh(evilPeer, `printf 'GET /v1/apps HTTP/1.0\\r\\nAuthorization: Bearer hgr_stolen_if_you_see_this\\r\\n\\r\\n' | nc -w 3 ${gateway} 4280 | head -1; ip neigh show ${gateway}`);
      assert.deepEqual(capture.seen, [], `the attacker captured: ${JSON.stringify(capture.seen)}`);
      assert.match(call.out, /401/, `the daemon itself answered (no token is valid): ${call.out}`);
      assert.match(call.out, new RegExp(`${gateway.replace(/\./g, '\\.')} dev eth0 lladdr ${macOf(gateway)} .*PERMANENT`), 'the gateway is pinned');
    } finally {
      capture.close();
      quiet('ip', ['netns', 'exec', ns(evil), 'ip', 'addr', 'del', `${gateway}/32`, 'dev', 'eth0']);
    }
  });
});

describe('IPv6 and host addresses', () => {
  it('gives machines no IPv6, and root in one cannot use it to reach a neighbour', async () => {
    const inside = await sh(evil, 'ip -6 addr show dev eth0; cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6');
    assert.doesNotMatch(inside.out, /inet6/, 'no link-local address');
    assert.match(inside.out, /^1$/m, 'IPv6 is off on eth0');
    // Root turns it back on in both machines: the bridge still drops every IPv6 frame.
    const enable = 'echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad; echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6';
    const disable = 'echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6';
    rootIn(ns(evilPeer), enable);
    rootIn(ns(evil), enable);
    try {
      await new Promise((r) => setTimeout(r, 500));
      const own = /fe80::[0-9a-f:]+/.exec(rootIn(ns(evil), 'ip -6 -o addr show dev eth0 scope link'))?.[0];
      assert.ok(own, 'root got a link-local address back');
      const ping = spawnSync('ip', ['netns', 'exec', ns(evil), 'busybox', 'ping6', '-c', '2', '-w', '3', '-I', 'eth0', 'ff02::1'], { encoding: 'utf8' });
      const fromOthers = ping.stdout.split('\n').filter((l) => / from fe80/.test(l) && !l.includes(own));
      assert.deepEqual(fromOthers, [], `no neighbour answered over IPv6: ${ping.stdout}${ping.stderr}`);
    } finally {
      quiet('ip', ['netns', 'exec', ns(evil), 'sh', '-c', disable]);
      quiet('ip', ['netns', 'exec', ns(evilPeer), 'sh', '-c', disable]);
    }
  });

  it('reaches only its own gateway on the host, even for ping', async () => {
    // From the machine's namespace as host root: a machine's own root has no raw sockets for
    // ping (its namespace is the host's), so this shows what the firewall itself lets through.
    const ping = (target: string) => spawnSync('ip', ['netns', 'exec', ns(victim), 'busybox', 'ping', '-c', '1', '-W', '2', target], { encoding: 'utf8' });
    const own = ping(gatewayOf(victim));
    assert.equal(own.status, 0, own.stdout + own.stderr);
    const other = ping(gatewayOf(leaky));
    assert.notEqual(other.status, 0, `another app's gateway (a host address) answered: ${other.stdout}`);
    const outside = ping(hostIp);
    assert.notEqual(outside.status, 0, `a host address answered: ${outside.stdout}`);
  });
});

describe('one daemon per data dir and per machine range', () => {
  it('refuses a second daemon on the same dir spelled DIR/ or through a symlink', () => {
    const link = `${dataDir}-link`;
    symlinkSync(dataDir, link);
    try {
      for (const spelling of [`${dataDir}/`, link]) {
        const second = spawnSync(HANGAR, ['serve', '--data-dir', spelling, '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0', '--proxy-tls-listen', '127.0.0.1:0', '--machine-cidr', testMachineCidr(dataDir)], { encoding: 'utf8', timeout: 20_000 });
        assert.equal(second.status, 1, `${spelling}: ${second.stdout}${second.stderr}`);
        assert.match(second.stderr, new RegExp(`another Hangar daemon \\(pid ${d.process.pid}\\) serves`));
      }
    } finally {
      quiet('rm', ['-f', link]);
    }
  });

  it("refuses a daemon on another data dir with a machine range the first one's bridges hold", async () => {
    const otherDir = await makeDataDir();
    try {
      const second = spawnSync(HANGAR, ['serve', '--data-dir', otherDir, '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0', '--proxy-tls-listen', '127.0.0.1:0', '--machine-cidr', testMachineCidr(dataDir)], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(second.status, 1, second.stdout + second.stderr);
      assert.match(second.stderr, new RegExp(`machine range ${testMachineCidr(dataDir).replace(/\./g, '\\.')} is already in use on this host: route .* on ${bridgePrefix(tag)}`));
      assert.match(second.stderr, /hint: choose another range with --machine-cidr \(or "machine_cidr" in <data-dir>\/config\.json\)/);
      assert.match(second.stderr, /code: network_conflict/);
    } finally {
      await cleanupDataDir(otherDir);
    }
  });
});

/** A /20 for another daemon of this file beside the first one (daemons on one range are refused). */
function otherCidr(k: number): string {
  const [a, b, c] = testMachineCidr(dataDir).split('.');
  return `${a}.${b}.${(Number(c) + 16 * k) % 256}.0/20`;
}

describe('what a daemon leaves on the host', () => {
  const leftovers = (t: string) => ({
    bridges: readdirSync('/sys/class/net').filter((n) => n.startsWith(bridgePrefix(t))),
    namespaces: (existsSync('/run/netns') ? readdirSync('/run/netns') : []).filter((n) => n.startsWith(`hgm-${t}-`)),
    tables: execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }).split('\n').filter((l) => l.endsWith(` ${firewallTable(t)}`)),
  });

  it('SIGTERM with no machine running removes its bridges, namespaces and tables; the next start makes them again', async () => {
    const other = await withDaemon(['--machine-cidr', otherCidr(1)]);
    try {
      const t = networkTag(other.dataDir);
      await other.client.apps.create('leave');
      const m = await other.client.machines.create('leave', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
      assert.ok(leftovers(t).bridges.length === 1 && leftovers(t).tables.length === 2, JSON.stringify(leftovers(t)));
      await other.client.machines.stop('leave', m.id);
      await other.client.machines.wait('leave', m.id, 'stopped');
      await other.stop();
      assert.deepEqual(leftovers(t), { bridges: [], namespaces: [], tables: [] });

      const again = await startDaemon(other.dataDir, ['--machine-cidr', otherCidr(1)]);
      try {
        await again.client.machines.start('leave', m.id);
        const r = await again.client.machines.exec('leave', m.id, ['sh', '-c', 'ip -4 -o addr show eth0'], { timeoutS: 20 });
        assert.equal(r.exit_code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, new RegExp(m.private_ip.replace(/\./g, '\\.')));
        const ping = spawnSync('ip', ['netns', 'exec', netnsName(t, m.id), 'busybox', 'ping', '-c', '1', '-W', '2', m.private_ip.replace(/\.\d+$/, '.1')], { encoding: 'utf8' });
        assert.equal(ping.status, 0, ping.stdout + ping.stderr);
      } finally {
        await again.kill();
      }
    } finally {
      await other.close();
    }
  });

  it('`hangar network prune` removes a killed daemon\'s leftovers, and refuses while it runs', async () => {
    const other = await withDaemon(['--machine-cidr', otherCidr(2)]);
    try {
      const t = networkTag(other.dataDir);
      await other.client.apps.create('prune');
      const m = await other.client.machines.create('prune', { config: { image: 'hangar/busybox', init: { cmd: ['sleep', 'inf'] } } });
      const env = { ...process.env, HANGAR_DATA_DIR: '' };
      const running = spawnSync(HANGAR, ['network', 'prune', '--data-dir', other.dataDir], { encoding: 'utf8', env });
      assert.equal(running.status, 1, running.stdout + running.stderr);
      assert.match(running.stderr, new RegExp(`a Hangar daemon \\(pid ${other.process.pid}\\) serves`));
      assert.match(running.stderr, /hint: /);

      await other.kill();
      assert.equal(leftovers(t).tables.length, 2);
      const inUse = spawnSync(HANGAR, ['network', 'prune', '--data-dir', other.dataDir], { encoding: 'utf8', env });
      assert.equal(inUse.status, 1, inUse.stdout + inUse.stderr);
      assert.match(inUse.stderr, new RegExp(`1 machine of .* still runs in hgm-${t}-${m.id}`));
      assert.match(inUse.stderr, /hint: .*--force/);
      // The machine ends (its processes, found by its namespace, killed by PID): nothing uses the network now.
      for (const pid of execFileSync('ip', ['netns', 'pids', netnsName(t, m.id)], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
        quiet('kill', ['-KILL', pid]);
      }
      await new Promise((r) => setTimeout(r, 300));
      const pruned = spawnSync(HANGAR, ['network', 'prune', '--data-dir', `${other.dataDir}/`], { encoding: 'utf8', env });
      assert.equal(pruned.status, 0, pruned.stdout + pruned.stderr);
      assert.match(pruned.stdout, new RegExp(`hgm-${t}-${m.id}`));
      assert.match(pruned.stdout, new RegExp(`inet ${firewallTable(t)}`));
      assert.deepEqual(leftovers(t), { bridges: [], namespaces: [], tables: [] });
      const twice = spawnSync(HANGAR, ['network', 'prune', '--data-dir', other.dataDir], { encoding: 'utf8', env });
      assert.equal(twice.status, 0);
      assert.match(twice.stdout, /nothing to remove/);
    } finally {
      await other.close();
    }
  });
});
