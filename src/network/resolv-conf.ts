import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { HangarError } from '../protocol/errors.ts';
import type { Upstream } from './internal-dns.ts';

/** A machine's resolver: its app's gateway answers `.internal` names; short ids resolve too. */
export function resolvConf(app: string, gateway: string): string {
  return `nameserver ${gateway}\nsearch vm.${app}.internal ${app}.internal\n`;
}

/**
 * Where gateways look up names outside `.internal`: `configured` ("ADDRESS" or "ADDRESS:PORT",
 * "[v6]:PORT") when given, else the host's first nameserver. The daemon asks, not the machine,
 * so a loopback resolver (systemd-resolved's 127.0.0.53) serves too.
 */
export async function upstreamResolver(configured?: string): Promise<Upstream | undefined> {
  if (configured !== undefined) {
    const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/.exec(configured) ?? /^()([^[\]]+)()$/.exec(configured);
    const host = m?.[1] || m?.[2] || '';
    const port = m?.[3] ? Number(m[3]) : 53;
    if (!isIP(host) || port < 1 || port > 65535) {
      throw new HangarError('validation_failed', `dns_upstream ${JSON.stringify(configured)} is not ADDRESS or ADDRESS:PORT`, {
        hint: 'set dns_upstream in the data dir config.json to a resolver address such as "192.0.2.53" or "127.0.0.1:5353"',
      });
    }
    return { host, port };
  }
  const text = await readFile('/etc/resolv.conf', 'utf8').catch(() => '');
  const host = /^\s*nameserver\s+(\S+)/m.exec(text)?.[1]?.replace(/%.*$/, '');
  return host && isIP(host) ? { host, port: 53 } : undefined;
}
