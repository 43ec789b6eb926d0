import { HangarError } from '../protocol/errors.ts';

// Private addresses: the machine range (default 172.29.0.0/16) is cut into one /24 per app;
// .1 of each is the app's gateway on the host, .2–.254 are its machines.

export const DEFAULT_MACHINE_CIDR = '172.29.0.0/16';
const APP_PREFIX = 24;

export type MachineRange = { base: number; prefix: number };
export type AppSubnet = { index: number; network: string; gateway: string; prefix: number };

export function parseMachineCidr(cidr: string): MachineRange {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = m?.slice(1, 5).map(Number) ?? [];
  const prefix = Number(m?.[5]);
  if (!m || octets.some((o) => o > 255) || prefix > APP_PREFIX || prefix < 8) {
    throw new HangarError('validation_failed', `machine range ${JSON.stringify(cidr)} is not an IPv4 CIDR from /8 to /24`, {
      hint: `use a private range such as ${DEFAULT_MACHINE_CIDR}`,
    });
  }
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { base: (toInt(octets) & mask) >>> 0, prefix };
}

/** The range as `a.b.c.d/n`. */
export function rangeCidr(range: MachineRange): string {
  return `${toDotted(range.base)}/${range.prefix}`;
}

/** How many /24 app subnets the range holds. */
export function appSubnetCount(range: MachineRange): number {
  return 2 ** (APP_PREFIX - range.prefix);
}

export function appSubnet(range: MachineRange, index: number): AppSubnet {
  const network = range.base + index * 256;
  return { index, network: toDotted(network), gateway: toDotted(network + 1), prefix: APP_PREFIX };
}

/** The app subnet an address belongs to (the index its /24 has in the range). */
export function subnetIndexOf(range: MachineRange, ip: string): number {
  return Math.floor((toInt(ip.split('.').map(Number)) - range.base) / 256);
}

/** Whether an IPv4 address lies in the range (false for anything else). */
export function ipInRange(range: MachineRange, ip: string): boolean {
  const octets = ip.split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) return false;
  const mask = (0xffffffff << (32 - range.prefix)) >>> 0;
  return ((toInt(octets) & mask) >>> 0) === range.base;
}

/** The lowest machine address of the subnet not in `used`. */
export function pickAddress(subnet: AppSubnet, used: ReadonlySet<string>): string {
  const network = toInt(subnet.network.split('.').map(Number));
  for (let host = 2; host < 255; host++) {
    const ip = toDotted(network + host);
    if (!used.has(ip)) return ip;
  }
  throw new HangarError('network_exhausted', `app subnet ${subnet.network}/${subnet.prefix} has no free address`, {
    hint: 'destroy machines of this app you no longer need; an app holds at most 253 machines',
  });
}

function toInt(octets: number[]): number {
  return ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
}

function toDotted(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
