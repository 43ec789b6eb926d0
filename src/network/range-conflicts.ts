import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { HangarError } from '../protocol/errors.ts';
import { rangeCidr, type MachineRange } from './addresses.ts';

// Machine addresses are only reachable when the host routes them to this daemon's bridges. A
// route or an address on the range that belongs to anything else (another Hangar's bridges, a
// VPN, Docker) takes the traffic instead, and machines would start unreachable without a word.

/** What else on the host uses addresses of `range` ("172.29.0.0/24 on hgb-1a2b-0"), ignoring interfaces `ours` accepts. */
export function rangeUsers(range: MachineRange, ours: (iface: string) => boolean): string[] {
  const found = new Set<string>();
  for (const r of mainRoutes()) {
    // The default route covers everything; it is where egress goes, not a conflict.
    if (r.prefix === 0 || ours(r.iface) || !overlaps(range, r)) continue;
    found.add(`route ${toDotted(r.base)}/${r.prefix} on ${r.iface}`);
  }
  for (const [iface, addrs] of Object.entries(networkInterfaces())) {
    if (ours(iface)) continue;
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv4' || !a.cidr) continue;
      const prefix = Number(a.cidr.split('/')[1]);
      if (overlaps(range, { base: toInt(a.address), prefix })) found.add(`address ${a.cidr} on ${iface}`);
    }
  }
  return [...found];
}

/** Refuses a range that something else on the host already uses. */
export function assertRangeFree(range: MachineRange, ours: (iface: string) => boolean, what = `machine range ${rangeCidr(range)}`): void {
  const users = rangeUsers(range, ours);
  if (users.length === 0) return;
  const hangar = users.some((u) => / on hgb-/.test(u));
  throw new HangarError('network_conflict', `${what} is already in use on this host: ${users.join(', ')}`, {
    hint:
      'choose another range with --machine-cidr (or "machine_cidr" in <data-dir>/config.json)' +
      (hangar ? '; hgb-* bridges belong to another Hangar data dir: if its daemon is gone, `hangar network prune --data-dir THAT_DIR` removes them' : ''),
    details: { range: rangeCidr(range), users },
  });
}

type Route = { iface: string; base: number; prefix: number };

/** The main table's IPv4 routes; /proc/net/route is read without spawning `ip`. */
function mainRoutes(): Route[] {
  const lines = readFileSync('/proc/net/route', 'utf8').trim().split('\n').slice(1);
  return lines.map((line) => {
    const [iface, dest, , , , , , mask] = line.split(/\s+/);
    // A contiguous mask's prefix length is the count of its leading ones.
    return { iface: iface!, base: littleEndian(dest!), prefix: Math.clz32(~littleEndian(mask!) >>> 0) };
  });
}

function overlaps(a: MachineRange, b: { base: number; prefix: number }): boolean {
  const prefix = Math.min(a.prefix, b.prefix);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return ((a.base & mask) >>> 0) === ((b.base & mask) >>> 0);
}

/** /proc/net/route prints addresses as the host-order hex of network-order bytes. */
function littleEndian(hex: string): number {
  const n = Number.parseInt(hex, 16);
  return (((n & 0xff) << 24) | (((n >>> 8) & 0xff) << 16) | (((n >>> 16) & 0xff) << 8) | (n >>> 24)) >>> 0;
}

function toInt(ip: string): number {
  return ip.split('.').reduce((n, o) => ((n << 8) | Number(o)) >>> 0, 0);
}

function toDotted(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
