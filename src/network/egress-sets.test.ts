import { it } from 'node:test';
import assert from 'node:assert/strict';
import { AllowedSets } from './egress-sets.ts';
import { domainAllowed, domainPatternProblem } from '../protocol/domain-patterns.ts';
import { parseConntrackLine, parseDeniedLine } from './egress-watch.ts';

const policy = { policy: 'domains' as const, allow: ['*.example.com'] };

it('puts an address in for twice its TTL (a minute at least) and calls nft again only when less than the TTL is left', () => {
  const sets = new AllowedSets();
  sets.installed(0, policy, [], 0);
  assert.deepEqual(sets.extend(0, [{ ip: '192.0.2.1', ttlS: 0 }, { ip: '192.0.2.2', ttlS: 300 }, { ip: '192.0.2.2', ttlS: 30 }], 0), [
    { ip: '192.0.2.1', timeoutS: 120 },
    { ip: '192.0.2.2', timeoutS: 600 },
  ]);
  assert.deepEqual(sets.extend(0, [{ ip: '192.0.2.1', ttlS: 5 }, { ip: '192.0.2.2', ttlS: 300 }], 50_000), [], 'in for long enough: no nft call');
  assert.deepEqual(sets.extend(0, [{ ip: '192.0.2.1', ttlS: 5 }], 61_000), [{ ip: '192.0.2.1', timeoutS: 120 }], 'less than a minute left: in again');
  assert.deepEqual(sets.extend(0, [{ ip: '192.0.2.2', ttlS: 10 }], 100_000), [], 'a shorter TTL never shortens what is there');
  assert.deepEqual(sets.extend(1, [{ ip: '192.0.2.1', ttlS: 5 }], 0), [], 'no chain, no set');
  assert.ok(sets.isCurrent(0, policy));
  assert.ok(!sets.isCurrent(0, { policy: 'domains', allow: ['other.example.com'] }));
});

it('matches names to patterns and explains bad patterns', () => {
  assert.ok(domainAllowed(['*.github.com'], 'API.GitHub.com.'));
  assert.ok(domainAllowed(['*.github.com'], 'a.b.github.com'));
  assert.ok(!domainAllowed(['*.github.com'], 'github.com'));
  assert.ok(!domainAllowed(['*.github.com'], 'evilgithub.com'));
  assert.ok(domainAllowed(['registry.npmjs.org'], 'registry.npmjs.org'));
  assert.ok(!domainAllowed(['registry.npmjs.org'], 'x.registry.npmjs.org'));
  assert.equal(domainPatternProblem('_dmarc.example.com'), undefined);
  assert.match(domainPatternProblem('a'.repeat(64) + '.com')!, /label/);
  assert.match(domainPatternProblem('10.0.0.0/8')!, /cidrs/);
});

it('reads conntrack events and the denied chain\'s kernel log lines', () => {
  assert.deepEqual(
    parseConntrackLine('[1796229183.617374]\t[DESTROY] tcp      6 TIME_WAIT src=172.29.0.2 dst=198.51.100.7 sport=37390 dport=443 packets=5 bytes=271 src=198.51.100.7 dst=10.0.0.5 sport=443 dport=37390 packets=4 bytes=1279 [ASSURED] id=3856177310'),
    { kind: 'close', src: '172.29.0.2', proto: 'tcp', dst: '198.51.100.7:443', id: '3856177310', bytesOut: 271, bytesIn: 1279, packetsOut: 5, packetsIn: 4 },
  );
  assert.deepEqual(
    parseConntrackLine('[1796229167.694336]\t    [NEW] udp      17 30 src=172.29.0.2 dst=198.51.100.7 sport=5000 dport=53 [UNREPLIED] src=198.51.100.7 dst=10.0.0.5 sport=53 dport=5000 id=7'),
    { kind: 'connect', src: '172.29.0.2', proto: 'udp', dst: '198.51.100.7:53', id: '7' },
  );
  assert.equal(parseConntrackLine('[1796229179.672830]\t [UPDATE] tcp      6 1 TIME_WAIT src=172.29.0.2 dst=198.51.100.7 sport=1 dport=2 src=198.51.100.7 dst=10.0.0.5 sport=2 dport=1 [ASSURED] id=9'), 'closing');
  const prefix = 'hangar-ab12-denied: ';
  assert.deepEqual(
    parseDeniedLine(`<6>[12023.444507] ${prefix}IN=hgb-ab12-0 OUT=eth0 MAC=aa SRC=172.29.0.2 DST=198.51.100.9 LEN=60 TOS=0x00 TTL=63 ID=1 DF PROTO=TCP SPT=52320 DPT=8080 WINDOW=1 RES=0x00 SYN URGP=0 `, prefix),
    { kind: 'denied', src: '172.29.0.2', proto: 'tcp', dst: '198.51.100.9:8080', sport: '52320' },
  );
  assert.deepEqual(parseDeniedLine(`<6>[1.0] ${prefix}IN=hgb-ab12-0 OUT=eth0 SRC=172.29.0.2 DST=198.51.100.9 LEN=84 PROTO=ICMP TYPE=8 CODE=0 ID=3 SEQ=1 `, prefix), { kind: 'denied', src: '172.29.0.2', proto: 'icmp', dst: '198.51.100.9' });
  assert.equal(parseDeniedLine('<6>[1.0] hangar-ffff-denied: SRC=1.2.3.4 DST=5.6.7.8 PROTO=TCP', prefix), undefined, "another daemon's line");
});
