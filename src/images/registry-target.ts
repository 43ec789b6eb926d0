import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { Agent, buildConnector } from 'undici';

// Where a pull may send requests. Redirects and the token realm are URLs the registry chooses, so
// a hostile registry could aim the daemon at its own API, a cloud metadata service or anything on
// the host's network. The rules: the registry the caller named, and registries the operator listed
// as insecure, are "listed" and reached as they are; anything else must be HTTPS and resolve only to
// public addresses, checked at connect time on the very address the socket is opened to.

export type PullOrigins = {
  /** `host[:port]` the pull is from, as URL.host spells it (`127.0.0.1:5000`, `registry-1.docker.io`). */
  registryHost: string;
  /** The registry is spoken to over plain HTTP. */
  registryInsecure: boolean;
  insecureRegistries: string[];
};

/** The registry itself or one the operator listed in `insecure_registries`. */
export function isListed(url: URL, origins: PullOrigins): boolean {
  const keys = hostKeys(url);
  if (keys.includes(origins.registryHost.toLowerCase())) return true;
  return origins.insecureRegistries.some((entry) => keys.includes(entry.toLowerCase()));
}

/** Why a redirect from a registry response must not be followed, or undefined when it may be. */
export function redirectRefusal(to: URL, origins: PullOrigins): string | undefined {
  if (to.protocol === 'https:') return undefined;
  const sameRegistry = to.protocol === 'http:' && origins.registryInsecure && hostKeys(to).includes(origins.registryHost.toLowerCase());
  return sameRegistry ? undefined : `redirected to ${to.protocol}//${to.host}; only HTTPS redirects are followed (plain HTTP only within the same insecure registry)`;
}

/** Why a Bearer challenge's realm must not be asked for a token, or undefined when it may be. */
export function realmRefusal(realm: URL, origins: PullOrigins): string | undefined {
  if (realm.protocol === 'https:') return undefined;
  const keys = hostKeys(realm);
  const insecureListed =
    (origins.registryInsecure && keys.includes(origins.registryHost.toLowerCase())) ||
    origins.insecureRegistries.some((entry) => keys.includes(entry.toLowerCase()));
  if (realm.protocol === 'http:' && insecureListed) return undefined;
  return `names the token realm ${realm.protocol}//${realm.host}, which is neither HTTPS nor a registry listed as insecure`;
}

/** A connection to a target that is not listed went to (or would have gone to) this address. */
export class RefusedAddressError extends Error {
  readonly hostname: string;
  readonly address: string;
  constructor(hostname: string, address: string) {
    super(`${hostname} resolves to ${address}, a private, loopback or link-local address`);
    this.hostname = hostname;
    this.address = address;
  }
}

// Everything that is not a globally routed unicast address (RFC 6890 and IANA's special-purpose
// registries), the machine networks and the host's own services among them.
const NOT_PUBLIC = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) NOT_PUBLIC.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 128], ['::1', 128], ['64:ff9b:1::', 48], ['100::', 64], ['2001::', 23], ['2001:db8::', 32], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const) NOT_PUBLIC.addSubnet(net, prefix, 'ipv6');

export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !NOT_PUBLIC.check(address, 'ipv4');
  if (family !== 6) return false;
  // Addresses that carry an IPv4 address (mapped, NAT64, 6to4) are judged by that address.
  const embedded = embeddedIpv4(address);
  if (embedded !== undefined) return isPublicAddress(embedded);
  return !NOT_PUBLIC.check(address, 'ipv6');
}

/** Resolves a name and returns one of its addresses, refusing if any address is not public. */
export async function resolvePublic(hostname: string): Promise<{ address: string; family: number }> {
  const bare = hostname.replace(/^\[(.*)\]$/, '$1');
  const family = isIP(bare);
  const addresses = family ? [{ address: bare, family }] : await lookup(bare, { all: true, verbatim: true });
  if (addresses.length === 0) throw Object.assign(new Error(`${bare} has no address`), { code: 'ENOTFOUND' });
  // Every address is checked, not just the one used: a name with one public and one private address is refused.
  const bad = addresses.find((a) => !isPublicAddress(a.address));
  if (bad) throw new RefusedAddressError(bare, bad.address);
  return addresses[0] as { address: string; family: number };
}

/**
 * The dispatcher for targets that are not listed: the socket is opened to the address
 * resolvePublic checked (TLS still verifies the name), so a second DNS answer cannot swap it.
 */
export function publicOnlyAgent(resolve: typeof resolvePublic = resolvePublic): Agent {
  const connect = buildConnector({ allowH2: false });
  return new Agent({
    allowH2: false,
    connect: (opts, callback) => {
      resolve(opts.hostname).then(
        ({ address }) => {
          const name = opts.hostname.replace(/^\[(.*)\]$/, '$1');
          connect({ ...opts, hostname: address, ...(isIP(name) ? {} : { servername: name }) }, callback);
        },
        (err: Error) => callback(err, null),
      );
    },
  });
}

function hostKeys(url: URL): string[] {
  const host = url.host.toLowerCase();
  if (url.port) return [host];
  return [host, `${url.hostname.toLowerCase()}:${url.protocol === 'https:' ? 443 : 80}`];
}

function embeddedIpv4(address: string): string | undefined {
  const lower = address.toLowerCase();
  const dotted = /^(?:::ffff:|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted) return dotted[1];
  const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex) return hexPairToIpv4(hex[1] as string, hex[2] as string);
  const sixToFour = /^2002:([0-9a-f]{1,4}):([0-9a-f]{1,4}):/.exec(lower);
  if (sixToFour) return hexPairToIpv4(sixToFour[1] as string, sixToFour[2] as string);
  return undefined;
}

function hexPairToIpv4(hi: string, lo: string): string {
  const a = Number.parseInt(hi, 16);
  const b = Number.parseInt(lo, 16);
  return `${a >> 8}.${a & 0xff}.${b >> 8}.${b & 0xff}`;
}
