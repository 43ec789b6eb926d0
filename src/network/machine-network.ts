import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { HangarError } from '../protocol/errors.ts';
import { appSubnet, parseMachineCidr, subnetIndexOf, type AppSubnet, type MachineRange } from './addresses.ts';
import { bridgeName, bridgePrefix, firewallTable, netnsName, networkTag, vethName } from './names.ts';

// Each machine lives in a named network namespace made at create and kept across stop/start, so
// start only joins it. Its veth hangs on its app's bridge, whose address is the app's gateway:
// machines of one app share a layer-2 segment; different apps are different bridges, and this
// daemon's nftables table drops anything routed between them or sent from a machine to the host.

const run = promisify(execFile);

export type MachineNetworkOptions = {
  dataDir: string;
  machineCidr: string;
  /** Called for each app bridge that is up (at setUp, and as bridges are made), e.g. to serve DNS on its gateway. */
  onBridgeUp?: (subnet: AppSubnet) => Promise<void>;
  onBridgeDown?: (subnetIndex: number) => void;
};

export class MachineNetwork {
  readonly range: MachineRange;
  readonly #tag: string;
  readonly #onBridgeUp: (subnet: AppSubnet) => Promise<void>;
  readonly #onBridgeDown: (subnetIndex: number) => void;

  constructor(opts: MachineNetworkOptions) {
    this.range = parseMachineCidr(opts.machineCidr);
    this.#tag = networkTag(opts.dataDir);
    this.#onBridgeUp = opts.onBridgeUp ?? (async () => {});
    this.#onBridgeDown = opts.onBridgeDown ?? (() => {});
  }

  /** Installs (or refreshes) the firewall table; idempotent, run at every daemon start. */
  async setUp(): Promise<void> {
    const table = firewallTable(this.#tag);
    const bridges = `"${bridgePrefix(this.#tag)}*"`;
    const existing = (await readdir('/sys/class/net')).filter((name) => name.startsWith(bridgePrefix(this.#tag)));
    await nft(`table inet ${table} {}
delete table inet ${table}
table inet ${table} {
  chain forward {
    type filter hook forward priority 0; policy accept;
${existing.map((b) => `    ${isolationRule(b, bridges)}`).join('\n')}
  }
  chain input {
    type filter hook input priority 0; policy accept;
    iifname ${bridges} ct state established,related accept
    iifname ${bridges} icmp type echo-request accept
    iifname ${bridges} udp dport 53 accept
    iifname ${bridges} drop
  }
}
`);
    for (const bridge of existing) await this.#onBridgeUp(appSubnet(this.range, Number(bridge.slice(bridgePrefix(this.#tag).length))));
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
    ]);
  }

  /** Removes the machine's namespace (its veth goes with it). Idempotent. */
  async detach(machineId: string): Promise<void> {
    await run('ip', ['netns', 'del', netnsName(this.#tag, machineId)]).catch(() => undefined);
    await run('ip', ['link', 'del', vethName(machineId)]).catch(() => undefined);
  }

  /** Removes an app's bridge once it has no machines. Idempotent. */
  async removeApp(subnetIndex: number): Promise<void> {
    this.#onBridgeDown(subnetIndex);
    await run('ip', ['link', 'del', bridgeName(this.#tag, subnetIndex)]).catch(() => undefined);
  }

  async #ensureBridge(subnet: AppSubnet): Promise<string> {
    const bridge = bridgeName(this.#tag, subnet.index);
    if (existsSync(`/sys/class/net/${bridge}`)) return bridge;
    await ipScript([{ commands: [`link add ${bridge} type bridge`, `addr add ${subnet.gateway}/${subnet.prefix} dev ${bridge}`, `link set ${bridge} up`] }]).catch(async (err) => {
      // Another create made it first; anything else is a real failure.
      if (!existsSync(`/sys/class/net/${bridge}`)) throw err;
    });
    await nft(`add rule inet ${firewallTable(this.#tag)} forward ${isolationRule(bridge, `"${bridgePrefix(this.#tag)}*"`)}\n`);
    await this.#onBridgeUp(subnet);
    return bridge;
  }
}

/**
 * Drops what one app's bridge would route to another app's. Per bridge, because with
 * br_netfilter on (Docker hosts) traffic inside one bridge passes this hook too, in and out
 * through the same bridge, and nft cannot compare iifname with oifname directly.
 */
function isolationRule(bridge: string, allBridges: string): string {
  return `iifname "${bridge}" oifname ${allBridges} oifname != "${bridge}" drop`;
}

/** `ip -batch` runs (each in a namespace or the host's), in one shell: a few ms in all. */
async function ipScript(batches: Array<{ netns?: string; commands: string[] }>): Promise<void> {
  const script = ['set -e', ...batches.map((b, i) => `ip ${b.netns ? `-n ${b.netns} ` : ''}-batch - <<'EOF${i}'\n${b.commands.join('\n')}\nEOF${i}`)].join('\n');
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
