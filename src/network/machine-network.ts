import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { Egress } from '../protocol/app-settings.ts';
import { HangarError } from '../protocol/errors.ts';
import { appSubnet, parseMachineCidr, rangeCidr, subnetIndexOf, type AppSubnet, type MachineRange } from './addresses.ts';
import { bridgeScript, removeBridgeScript, tableScript } from './firewall.ts';
import { bridgeName, bridgePrefix, netnsName, networkTag, vethName } from './names.ts';

// Each machine lives in a named network namespace made at create and kept across stop/start, so
// start only joins it. Its veth hangs on its app's bridge, whose address is the app's gateway:
// machines of one app share a layer-2 segment; different apps are different bridges, and this
// daemon's nftables table (firewall.ts) keeps apps apart, keeps machines off the host's own
// services, and applies each app's egress policy to what leaves through NAT.

const run = promisify(execFile);

export type MachineNetworkOptions = {
  dataDir: string;
  machineCidr: string;
  /** The egress policy of the app holding this subnet; read whenever its rules are (re)built. */
  egressOf: (subnetIndex: number) => Egress;
  /** Called for each app bridge that is up (at setUp, and as bridges are made), e.g. to serve DNS on its gateway. */
  onBridgeUp?: (subnet: AppSubnet) => Promise<void>;
  onBridgeDown?: (subnetIndex: number) => void;
};

export class MachineNetwork {
  readonly range: MachineRange;
  readonly #tag: string;
  readonly #egressOf: (subnetIndex: number) => Egress;
  /** Subnets whose bridge has its firewall chain; changed only inside #serially. */
  readonly #installed = new Set<number>();
  #queue: Promise<unknown> = Promise.resolve();
  readonly #onBridgeUp: (subnet: AppSubnet) => Promise<void>;
  readonly #onBridgeDown: (subnetIndex: number) => void;

  constructor(opts: MachineNetworkOptions) {
    this.range = parseMachineCidr(opts.machineCidr);
    this.#tag = networkTag(opts.dataDir);
    this.#egressOf = opts.egressOf;
    this.#onBridgeUp = opts.onBridgeUp ?? (async () => {});
    this.#onBridgeDown = opts.onBridgeDown ?? (() => {});
  }

  /**
   * Turns on IPv4 forwarding (machines' egress is routed, as Docker's is) and installs (or
   * refreshes) the firewall table; idempotent, run at every daemon start.
   */
  async setUp(): Promise<void> {
    await writeFile('/proc/sys/net/ipv4/ip_forward', '1\n').catch((err: Error) => {
      throw new HangarError('host_unsupported', `cannot turn on IPv4 forwarding: ${err.message}`, {
        hint: 'run the daemon as root (it sets net.ipv4.ip_forward=1 for machine egress)',
        cause: err,
      });
    });
    await this.#serially(async () => {
      const prefix = bridgePrefix(this.#tag);
      const existing = (await readdir('/sys/class/net')).filter((name) => name.startsWith(prefix)).map((name) => appSubnet(this.range, Number(name.slice(prefix.length))));
      await nft(tableScript(this.#tag, rangeCidr(this.range), existing.map((s) => this.#bridgeRules(s))));
      this.#installed.clear();
      for (const subnet of existing) this.#installed.add(subnet.index);
      for (const subnet of existing) await this.#onBridgeUp(subnet);
    });
  }

  /** Rebuilds the rules of the app on this subnet from its current egress policy, if its bridge is up. */
  async refreshEgress(subnetIndex: number): Promise<void> {
    await this.#serially(async () => {
      if (this.#installed.has(subnetIndex)) await nft(bridgeScript(this.#tag, this.#bridgeRules(appSubnet(this.range, subnetIndex))));
    });
  }

  /** Where the runtime finds the machine's namespace. */
  netnsPath(machineId: string): string {
    return `/run/netns/${netnsName(this.#tag, machineId)}`;
  }

  subnetOf(ip: string): AppSubnet {
    return appSubnet(this.range, subnetIndexOf(this.range, ip));
  }

  /** Makes the machine's namespace and link unless they are there (after a reboot they are not). */
  async attach(machineId: string, ip: string): Promise<void> {
    const ns = netnsName(this.#tag, machineId);
    const veth = vethName(machineId);
    const hasNs = existsSync(this.netnsPath(machineId));
    const hasVeth = existsSync(`/sys/class/net/${veth}`);
    if (hasNs && hasVeth) return;
    if (hasNs || hasVeth) await this.detach(machineId);
    const subnet = this.subnetOf(ip);
    const bridge = await this.#ensureBridge(subnet);
    // One process for both halves: spawning from the daemon costs more than the netlink work.
    await ipScript([
      { commands: [`netns add ${ns}`, `link add ${veth} type veth peer name eth0 netns ${ns}`, `link set ${veth} master ${bridge} up`] },
      {
        netns: ns,
        commands: [`addr add ${ip}/${subnet.prefix} dev eth0`, 'link set lo up', 'link set eth0 up', `route add default via ${subnet.gateway}`],
      },
    ], [
      // The namespace belongs to the host's user namespace, so a machine's root (root only in its
      // own) has no CAP_NET_BIND_SERVICE or CAP_NET_RAW here. Low ports and ICMP echo (datagram
      // sockets) are opened to every user of the namespace instead, as Docker does; raw sockets,
      // and with them forged packets, stay out of reach.
      `nsenter --net=${this.netnsPath(machineId)} sh -c 'echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start && echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range'`,
    ]);
  }

  /** Removes the machine's namespace (its veth goes with it). Idempotent. */
  async detach(machineId: string): Promise<void> {
    await run('ip', ['netns', 'del', netnsName(this.#tag, machineId)]).catch(() => undefined);
    await run('ip', ['link', 'del', vethName(machineId)]).catch(() => undefined);
  }

  /** Removes an app's bridge once it has no machines. Idempotent. */
  async removeApp(subnetIndex: number): Promise<void> {
    await this.#serially(async () => {
      this.#onBridgeDown(subnetIndex);
      await run('ip', ['link', 'del', bridgeName(this.#tag, subnetIndex)]).catch(() => undefined);
      if (!this.#installed.delete(subnetIndex)) return;
      await nft(removeBridgeScript(this.#tag, subnetIndex, appSubnet(this.range, subnetIndex).gateway));
    });
  }

  /** The app's bridge, made with its firewall rules before any machine is attached to it. */
  async #ensureBridge(subnet: AppSubnet): Promise<string> {
    const bridge = bridgeName(this.#tag, subnet.index);
    if (this.#installed.has(subnet.index) && existsSync(`/sys/class/net/${bridge}`)) return bridge;
    await this.#serially(async () => {
      if (!existsSync(`/sys/class/net/${bridge}`)) {
        await ipScript([{ commands: [`link add ${bridge} type bridge`, `addr add ${subnet.gateway}/${subnet.prefix} dev ${bridge}`, `link set ${bridge} up`] }]);
      }
      if (this.#installed.has(subnet.index)) return;
      await nft(bridgeScript(this.#tag, this.#bridgeRules(subnet)));
      this.#installed.add(subnet.index);
      await this.#onBridgeUp(subnet);
    });
    return bridge;
  }

  #bridgeRules(subnet: AppSubnet) {
    return { index: subnet.index, gateway: subnet.gateway, egress: this.#egressOf(subnet.index) };
  }

  /** Bridge and firewall changes one at a time, so each reads the policy current when it runs. */
  #serially<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(fn);
    this.#queue = result.catch(() => undefined);
    return result;
  }
}

/** `ip -batch` runs (each in a namespace or the host's), then shell lines, in one shell: a few ms in all. */
async function ipScript(batches: Array<{ netns?: string; commands: string[] }>, then: string[] = []): Promise<void> {
  const script = ['set -e', ...batches.map((b, i) => `ip ${b.netns ? `-n ${b.netns} ` : ''}-batch - <<'EOF${i}'\n${b.commands.join('\n')}\nEOF${i}`), ...then].join('\n');
  await new Promise<void>((resolve, reject) => {
    execFile('sh', ['-c', script], (err, _stdout, stderr) => {
      if (err) {
        reject(new HangarError('runtime_error', `cannot set up the machine network: ${String(stderr).trim() || err.message}`, {
          hint: 'the daemon needs root and iproute2; check `ip netns list` and `ip link` on the host',
          cause: err,
        }));
      } else resolve();
    });
  });
}

async function nft(script: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = execFile('nft', ['-f', '-'], (err, _stdout, stderr) => {
      if (err) {
        reject(new HangarError('host_unsupported', `cannot install the machine firewall: ${String(stderr).trim() || err.message}`, {
          hint: 'install nftables (scripts/setup.sh does) and run the daemon as root',
          cause: err,
        }));
      } else resolve();
    });
    child.stdin!.end(script);
  });
}
