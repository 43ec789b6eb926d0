import { BlockList, isIP } from 'node:net';
import { lookup, Resolver } from 'node:dns/promises';
import { HangarError } from '../protocol/errors.ts';

// Where the tokenizer may send a request with a secret in it. A machine could otherwise have the
// daemon carry its credential to the host itself, to another app's machines, or to a cloud's
// metadata service: private, loopback, link-local, shared (CGNAT) and unspecified addresses are
// refused unless the operator exempts a range (tests exempt their loopback upstream). The name is
// resolved once and the address checked is the one dialled, so a second answer cannot differ.

const REFUSED: Array<[string, number, 'ipv4' | 'ipv6']> = [
  ['0.0.0.0', 8, 'ipv4'],
  ['10.0.0.0', 8, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'],
  ['127.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['224.0.0.0', 3, 'ipv4'],
  ['::', 128, 'ipv6'],
  ['::1', 128, 'ipv6'],
  ['fc00::', 7, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
];

type Destination = { address: string; family: 4 | 6 };
type Answer = { address: string; family: number };
/** All addresses of a name; the host's resolver (getaddrinfo) unless the policy is given another. */
export type NameLookup = (hostname: string) => Promise<Answer[]>;

const hostLookup: NameLookup = (hostname) => lookup(hostname, { all: true, verbatim: true });

/**
 * Asks one DNS server (the daemon's dns_upstream) directly, as the egress proxy must: the host's
 * own resolver could be the daemon's DNS steering, or a machine's, and answer the gateway.
 */
export function upstreamLookup(upstream: { host: string; port: number }): NameLookup {
  const resolver = new Resolver({ timeout: 5000, tries: 2 });
  resolver.setServers([isIP(upstream.host) === 6 ? `[${upstream.host}]:${upstream.port}` : `${upstream.host}:${upstream.port}`]);
  return async (hostname) => {
    const v4 = await resolver.resolve4(hostname).catch(() => [] as string[]);
    if (v4.length) return v4.map((address) => ({ address, family: 4 }));
    return (await resolver.resolve6(hostname)).map((address) => ({ address, family: 6 }));
  };
}

export class DestinationPolicy {
  readonly #refused = new BlockList();
  readonly #exempt = new BlockList();
  readonly #lookup: NameLookup;

  /** `exemptCidrs`: ranges the operator allows although they are private (e.g. 127.0.0.1/32 in tests). */
  constructor(exemptCidrs: string[] = [], nameLookup: NameLookup = hostLookup) {
    this.#lookup = nameLookup;
    for (const [net, prefix, type] of REFUSED) this.#refused.addSubnet(net, prefix, type);
    for (const cidr of exemptCidrs) {
      const [net, prefix] = cidr.split('/');
      const type = isIP(net ?? '') === 6 ? 'ipv6' : 'ipv4';
      this.#exempt.addSubnet(net!, Number(prefix ?? (type === 'ipv6' ? 128 : 32)), type);
    }
  }

  /** The address to dial for `hostname`: its first answer, when every answer is allowed. */
  async resolve(hostname: string): Promise<Destination> {
    const bare = hostname.replace(/^\[|\]$/g, '');
    const answers = isIP(bare)
      ? [{ address: bare, family: isIP(bare) }]
      : await this.#lookup(bare).catch(() => {
        throw new HangarError('upstream_unreachable', `${hostname} does not resolve`, { hint: 'check the host name in the request URL' });
      });
    if (answers.length === 0) throw new HangarError('upstream_unreachable', `${hostname} does not resolve`, { hint: 'check the host name in the request URL' });
    for (const a of answers) {
      if (!this.allows(a.address)) {
        throw new HangarError('destination_refused', `${hostname} resolves to ${a.address}, a private, loopback or link-local address`, {
          hint: 'the tokenizer only sends secrets to public addresses',
        });
      }
    }
    const first = answers[0]!;
    return { address: first.address, family: first.family === 6 ? 6 : 4 };
  }

  allows(address: string): boolean {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    const ip = mapped ?? address;
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    if (this.#exempt.check(ip, type)) return true;
    return !this.#refused.check(ip, type);
  }
}
