import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import packet from 'dns-packet';
import { networkTag } from '../../src/network/names.ts';
import { quiet } from './netns-probe.ts';
import { waitForPort } from './node-image.ts';

// "Outside" for egress tests: a network namespace joined to the host by a veth, with a few
// addresses from the benchmark range 198.19.0.0/16 (a /29 picked from the data dir's tag) and one
// in the link-local range (a /30 likewise), and a busybox httpd on port 8080 of all of them,
// serving "outside\n". Machines reach it only through the host's NAT. And a DNS server on
// loopback, UDP and TCP on one port, standing in for the host's resolver, answering from a table
// and noting every name it is asked.

export type Outside = {
  ns: string;
  /** The host's end (a host address), then the namespace's addresses. */
  hostIp: string;
  ips: string[];
  /** An address in the link-local range, where clouds serve instance metadata. */
  metadataIp: string;
  close(): void;
};

export async function makeOutside(dataDir: string, count: number): Promise<Outside> {
  const tag = networkTag(dataDir);
  const n = Number.parseInt(tag, 16);
  const net = [198, 19, n % 256, 8 * ((n >> 8) % 32)];
  const at = (host: number) => [...net.slice(0, 3), net[3]! + host].join('.');
  const linkLocal = [169, 254, n % 256, 4 * ((n >> 8) % 64)];
  const metadataAt = (host: number) => [...linkLocal.slice(0, 3), linkLocal[3]! + host].join('.');
  const ns = `hgt-${tag}-dom`;
  const veth = `hgtd-${tag}`;
  const ips = Array.from({ length: count }, (_, i) => at(i + 2));
  let httpd: ChildProcess | undefined;
  const close = () => {
    if (httpd?.pid) quiet('kill', ['-KILL', String(httpd.pid)]);
    quiet('ip', ['link', 'del', veth]);
    quiet('ip', ['netns', 'del', ns]);
  };
  try {
    execFileSync('sh', ['-c', `set -e
ip netns add ${ns}
ip link add ${veth} type veth peer name eth0 netns ${ns}
ip addr add ${at(1)}/29 dev ${veth}
ip link set ${veth} up
${ips.map((ip) => `ip -n ${ns} addr add ${ip}/29 dev eth0`).join('\n')}
ip addr add ${metadataAt(1)}/30 dev ${veth}
ip -n ${ns} addr add ${metadataAt(2)}/30 dev eth0
ip -n ${ns} link set lo up
ip -n ${ns} link set eth0 up`]);
    const www = join(dataDir, 'outside-www');
    mkdirSync(www, { recursive: true });
    writeFileSync(join(www, 'index.html'), 'outside\n');
    httpd = spawn('ip', ['netns', 'exec', ns, '/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', www], { stdio: 'ignore' });
    await waitForPort(ips[0]!, 8080);
  } catch (err) {
    close();
    throw err;
  }
  return { ns, hostIp: at(1), ips, metadataIp: metadataAt(2), close };
}

/** A record the test resolver answers with: an address, or another name. */
export type TestRecord = { type: 'A'; data: string; ttl: number } | { type: 'CNAME'; data: string; ttl: number };

export type TestResolver = {
  /** host:port, for config.json's dns_upstream. */
  address: string;
  /** Every name asked, in order. */
  asked: string[];
  /** Every name asked over TCP, in order. */
  askedOverTcp: string[];
  close(): void;
};

/** Answers A questions from `zone` (following CNAMEs within it), NXDOMAIN for names not in it. */
export async function startResolver(zone: Record<string, TestRecord[]>): Promise<TestResolver> {
  const asked: string[] = [];
  const askedOverTcp: string[] = [];
  const answer = (msg: Buffer, overTcp = false): Buffer => {
    const query = packet.decode(msg);
    const question = query.questions![0]!;
    asked.push(question.name);
    if (overTcp) askedOverTcp.push(question.name);
    const answers: packet.Answer[] = [];
    for (let name: string | undefined = question.name; name && zone[name]; ) {
      const records: TestRecord[] = zone[name]!;
      const owner: string = name;
      name = undefined;
      for (const r of records) {
        if (r.type === 'CNAME') name = r.data;
        if (r.type === 'CNAME' || question.type === 'A') answers.push({ name: owner, type: r.type, class: 'IN', ttl: r.ttl, data: r.data } as packet.Answer);
      }
    }
    return packet.encode({
      id: query.id, type: 'response', flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE | (zone[question.name] ? 0 : 3 /* NXDOMAIN */),
      questions: [question], answers,
    } as packet.Packet);
  };
  const udp: UdpSocket = createSocket('udp4');
  udp.on('message', (msg, from) => udp.send(answer(msg), from.port, from.address));
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
  const port = udp.address().port;
  const tcp: Server = createServer((conn) => {
    conn.on('error', () => {});
    conn.once('data', (chunk) => {
      const reply = answer(chunk.subarray(2, 2 + chunk.readUInt16BE(0)), true);
      const length = Buffer.alloc(2);
      length.writeUInt16BE(reply.length);
      conn.end(Buffer.concat([length, reply]));
    });
  }).listen(port, '127.0.0.1');
  await new Promise((r) => tcp.once('listening', r));
  return { address: `127.0.0.1:${port}`, asked, askedOverTcp, close: () => (udp.close(), tcp.close()) };
}
