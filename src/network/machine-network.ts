import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import type { Egress } from '../protocol/app-settings.ts';
import { HangarError } from '../protocol/errors.ts';
import { appSubnet, parseMachineCidr, rangeCidr, subnetIndexOf, type AppSubnet, type MachineRange } from './addresses.ts';
import { allowScript, bridgeScript, removeBridgeScript, tableScript, type AllowedAddress, type BridgeRules } from './firewall.ts';
import { AllowedSets, readAllowed, sameMark, type ResolvedAddress } from './egress-sets.ts';
import { findLeftovers, namespacesInUse, removeLeftovers } from './leftovers.ts';
import { bridgeName, bridgePrefix, macOf, netnsName, networkTag, vethName } from './names.ts';
import { guardTableScript, portScript, removePortScript, type GuardedPort } from './port-guard.ts';
import { assertRangeFree } from './range-conflicts.ts';
import { background, ipStep, ShellRunner } from './net-shell.ts';
import { nft } from './nft-lib.ts';
import { namespaceSysctls, ReadyNamespaces } from './ready-namespaces.ts';

// Each machine lives in a named network namespace made at create and kept across stop/start, so
// start only joins it. Its veth hangs on its app's bridge, whose address is the app's gateway:
// machines of one app share a layer-2 segment; different apps are different bridges, and this
// daemon's nftables tables keep apps apart, keep machines off the host's own services, apply each
// app's egress policy to what leaves through NAT (firewall.ts), and hold every machine to its own
// address and MAC (port-guard.ts). Inside the namespace the gateway's MAC is pinned and IPv6 is
// off; on the host the bridges have strict reverse-path filtering and no IPv6.

/** A machine's network counters, from its side. */
export type InterfaceTraffic = { rxBytes: number; txBytes: number; rxPackets: number; txPackets: number };

export type MachineNetworkOptions = {
  dataDir: string;
  machineCidr: string;
  /** The egress policy of the app holding this subnet; read whenever its rules are (re)built. */
  egressOf: (subnetIndex: number) => Egress;
  /** Every machine that has an address; their ports' anti-spoofing rules are rebuilt at setUp. */
  machines: () => Array<{ id: string; ip: string }>;
  /** Called for each app bridge that is up (at setUp, and as bridges are made), e.g. to serve DNS on its gateway. */
  onBridgeUp?: (subnet: AppSubnet) => Promise<void>;
  onBridgeDown?: (subnetIndex: number) => void;
};

export class MachineNetwork {
  readonly range: MachineRange;
  readonly #tag: string;
  readonly #egressOf: (subnetIndex: number) => Egress;
  readonly #machines: () => Array<{ id: string; ip: string }>;
  /** Subnets whose bridge has its firewall chain; changed only inside #serially. */
  readonly #installed = new Set<number>();
  #queue: Promise<unknown> = Promise.resolve();
  readonly #onBridgeUp: (subnet: AppSubnet) => Promise<void>;
  readonly #onBridgeDown: (subnetIndex: number) => void;
  /** The egress policy each installed chain was built from, and what its set lets out. */
  readonly #allowed = new AllowedSets();
  readonly #shell = new ShellRunner();
  /** Made ahead by a shell of their own: the requests' is kept for the requests. */
  readonly #ready: ReadyNamespaces;

  constructor(opts: MachineNetworkOptions) {
    this.range = parseMachineCidr(opts.machineCidr);
    this.#tag = networkTag(opts.dataDir);
    this.#ready = new ReadyNamespaces(this.#tag, new ShellRunner());
    this.#egressOf = opts.egressOf;
    this.#machines = opts.machines;
    this.#onBridgeUp = opts.onBridgeUp ?? (async () => {});
    this.#onBridgeDown = opts.onBridgeDown ?? (() => {});
  }

  /**
   * Refuses a machine range something else on the host routes, turns on IPv4 forwarding
   * (machines' egress is routed, as Docker's is) and installs (or refreshes) the firewall and
   * anti-spoofing tables in one transaction; idempotent, run at every daemon start.
   */
  async setUp(): Promise<void> {
    assertRangeFree(this.range, (iface) => iface.startsWith(bridgePrefix(this.#tag)));
    await writeFile('/proc/sys/net/ipv4/ip_forward', '1\n').catch((err: Error) => {
      throw new HangarError('host_unsupported', `cannot turn on IPv4 forwarding: ${err.message}`, {
        hint: 'run the daemon as root (it sets net.ipv4.ip_forward=1 for machine egress)',
        cause: err,
      });
    });
    await this.#serially(async () => {
      const prefix = bridgePrefix(this.#tag);
      const existing = (await readdir('/sys/class/net')).filter((name) => name.startsWith(prefix)).map((name) => appSubnet(this.range, Number(name.slice(prefix.length))));
      const ports = this.#machines().map((m) => this.#port(m.id, m.ip)).filter((p) => existsSync(`/sys/class/net/${p.veth}`));
      // What running machines were let out to stays theirs across a daemon restart, unless the policy changed meanwhile.
      const carried = await readAllowed(this.#tag);
      const rules = existing.map((s) => {
        const r = this.#bridgeRules(s);
        const kept = carried.get(s.index);
        return { ...r, allowed: kept && sameMark(r.egress, kept.mark) ? kept.addresses : [] };
      });
      await nft(tableScript(this.#tag, rangeCidr(this.range), rules) + guardTableScript(this.#tag, ports));
      this.#allowed.clear();
      for (const r of rules) this.#allowed.installed(r.index, r.egress, r.allowed);
      // Bridges made by an older daemon get the same hardening as new ones.
      if (existing.length > 0) await this.#shell.run(existing.map((s) => hardenBridge(bridgeName(this.#tag, s.index), s.gateway)));
      this.#installed.clear();
      for (const subnet of existing) this.#installed.add(subnet.index);
      for (const subnet of existing) await this.#onBridgeUp(subnet);
    });
  }

  /**
   * Rebuilds the rules of the app on this subnet from its current egress policy, if its bridge is
   * up. A changed policy empties its egress set: names allowed before must be asked for again.
   */
  async refreshEgress(subnetIndex: number): Promise<void> {
    await this.#serially(async () => {
      if (!this.#installed.has(subnetIndex)) return;
      const rules = this.#bridgeRules(appSubnet(this.range, subnetIndex));
      const changed = !this.#allowed.isCurrent(subnetIndex, rules.egress);
      await nft(bridgeScript(this.#tag, changed ? { ...rules, allowed: [] } : rules));
      if (changed) this.#allowed.installed(subnetIndex, rules.egress, []);
    });
  }

  /**
   * Lets the app's machines reach addresses its DNS resolved for allowed names, before the
   * answer goes out (so the first connect works), if `egress` is still the app's policy. False
   * when it is not (the answer is then refused), or the app's bridge is gone.
   */
  async allowResolved(subnetIndex: number, egress: Egress, addresses: ResolvedAddress[]): Promise<boolean> {
    return this.#serially(async () => {
      if (!this.#installed.has(subnetIndex) || !this.#allowed.isCurrent(subnetIndex, egress)) return false;
      const added: AllowedAddress[] = this.#allowed.extend(subnetIndex, addresses);
      if (added.length > 0) await nft(allowScript(this.#tag, subnetIndex, added));
      return true;
    });
  }

  /** Where the runtime finds the machine's namespace. */
  netnsPath(machineId: string): string {
    return `/run/netns/${netnsName(this.#tag, machineId)}`;
  }

  /**
   * Bytes and packets through the machine's eth0 since its network was made (it is kept across
   * stop/start), as the machine sees them: what its host end sent, the machine received.
   * Undefined when it has no link (no address, or a reboot took it away).
   */
  async traffic(machineId: string): Promise<InterfaceTraffic | undefined> {
    const dir = `/sys/class/net/${vethName(this.#tag, machineId)}/statistics`;
    const read = (name: string) => readFile(`${dir}/${name}`, 'utf8').then(Number, () => undefined);
    const [rxBytes, txBytes, rxPackets, txPackets] = await Promise.all([read('tx_bytes'), read('rx_bytes'), read('tx_packets'), read('rx_packets')]);
    if (rxBytes === undefined || txBytes === undefined || rxPackets === undefined || txPackets === undefined) return undefined;
    return { rxBytes, txBytes, rxPackets, txPackets };
  }

  subnetOf(ip: string): AppSubnet {
    return appSubnet(this.range, subnetIndexOf(this.range, ip));
  }

  /** Makes the machine's namespace and link unless they are there (after a reboot they are not). */
  async attach(machineId: string, ip: string): Promise<void> {
    const ns = netnsName(this.#tag, machineId);
    const port = this.#port(machineId, ip);
    const hasNs = existsSync(this.netnsPath(machineId));
    const hasVeth = existsSync(`/sys/class/net/${port.veth}`);
    if (hasNs && hasVeth) return;
    if (hasNs || hasVeth) await this.detach(machineId);
    const subnet = this.subnetOf(ip);
    const bridge = await this.#ensureBridge(subnet);
    const ready = hasNs || hasVeth ? undefined : this.#ready.take(ns);
    // One shell for the links: spawning from the daemon costs more than the netlink work. The port's
    // guard goes in beside them: until it is in, the port drops every frame (port-guard.ts), so
    // nothing leaves unchecked meanwhile.
    const hostSide = ready
      ? [`link set ${ready.veth} name ${port.veth}`, `link set ${port.veth} master ${bridge} up`]
      : [`netns add ${ns}`, `link add ${port.veth} type veth peer name eth0 netns ${ns}`, `link set ${port.veth} addrgenmode none`, `link set ${port.veth} master ${bridge} up`];
    // A ready namespace's host side is set up beside its inside; a new one must exist first, and its sysctls go beside.
    const aside = ready ? ipStep(undefined, hostSide) : namespaceSysctls(this.netnsPath(machineId));
    const links = this.#shell.run([
      ...(ready ? [] : [ipStep(undefined, hostSide)]),
      background(aside),
      'aside=$!',
      ipStep(ns, [
        `link set eth0 address ${macOf(ip)}`,
        `addr add ${ip}/${subnet.prefix} dev eth0`,
        'link set lo up',
        'link set eth0 up',
        // Without CAP_NET_ADMIN the machine cannot change this entry; ARP cannot move its gateway.
        `neigh replace ${subnet.gateway} lladdr ${macOf(subnet.gateway)} dev eth0 nud permanent`,
        `route add default via ${subnet.gateway}`,
      ]),
      'wait $aside',
    ]);
    // Both finish before a failure is told: the caller's cleanup must not race either.
    const [linked, guarded] = await Promise.allSettled([links, nft(portScript(this.#tag, port))]);
    if (linked.status === 'rejected') throw linked.reason;
    if (guarded.status === 'rejected') throw guarded.reason;
  }

  /** Removes the machine's namespace (its veth goes with it) and its port's guard. Idempotent. */
  async detach(machineId: string): Promise<void> {
    const veth = vethName(this.#tag, machineId);
    await Promise.all([
      this.#shell.run([`ip netns del ${netnsName(this.#tag, machineId)} 2>/dev/null || true`, `ip link del ${veth} 2>/dev/null || true`]),
      // What it removes may be gone already.
      nft(removePortScript(this.#tag, machineId, veth)).catch(() => undefined),
    ]);
  }

  /** Removes an app's bridge once it has no machines. Idempotent. */
  async removeApp(subnetIndex: number): Promise<void> {
    await this.#serially(async () => {
      this.#onBridgeDown(subnetIndex);
      await this.#shell.run([`ip link del ${bridgeName(this.#tag, subnetIndex)} 2>/dev/null || true`]);
      if (!this.#installed.delete(subnetIndex)) return;
      this.#allowed.forget(subnetIndex);
      await nft(removeBridgeScript(this.#tag, subnetIndex, appSubnet(this.range, subnetIndex).gateway));
    });
  }

  /**
   * When no process runs in any of this daemon's namespaces, removes every namespace, bridge and
   * nftables table it made (the next start makes what a machine needs again). Returns whether it
   * did; with a machine running, everything stays for the next daemon to adopt. Nothing more is
   * made ahead after this.
   */
  async tearDownIfIdle(): Promise<boolean> {
    this.#ready.close();
    return this.#serially(async () => {
      const leftovers = await findLeftovers(this.#tag);
      if ((await namespacesInUse(leftovers.namespaces)).length > 0) return false;
      for (const index of this.#installed) this.#onBridgeDown(index);
      this.#installed.clear();
      this.#allowed.clear();
      await removeLeftovers(leftovers);
      return true;
    });
  }

  /** The app's bridge, made with its firewall rules before any machine is attached to it. */
  async #ensureBridge(subnet: AppSubnet): Promise<string> {
    const bridge = bridgeName(this.#tag, subnet.index);
    if (this.#installed.has(subnet.index) && existsSync(`/sys/class/net/${bridge}`)) return bridge;
    await this.#serially(async () => {
      if (!existsSync(`/sys/class/net/${bridge}`)) {
        // Checked again per bridge: another daemon may have taken the range since this one started.
        const cidr = `${subnet.network}/${subnet.prefix}`;
        assertRangeFree(parseMachineCidr(cidr), (iface) => iface.startsWith(bridgePrefix(this.#tag)), `app subnet ${cidr}`);
        await this.#shell.run([
          ipStep(undefined, [`link add ${bridge} type bridge`, `link set ${bridge} address ${macOf(subnet.gateway)} addrgenmode none`, `addr add ${subnet.gateway}/${subnet.prefix} dev ${bridge}`]),
          hardenBridge(bridge, subnet.gateway),
          `ip link set ${bridge} up`,
        ]);
      }
      if (this.#installed.has(subnet.index)) return;
      const rules = { ...this.#bridgeRules(subnet), allowed: [] };
      await nft(bridgeScript(this.#tag, rules));
      this.#allowed.installed(subnet.index, rules.egress, []);
      this.#installed.add(subnet.index);
      await this.#onBridgeUp(subnet);
    });
    return bridge;
  }

  #bridgeRules(subnet: AppSubnet): BridgeRules {
    return { index: subnet.index, subnet: `${subnet.network}/${subnet.prefix}`, gateway: subnet.gateway, egress: this.#egressOf(subnet.index) };
  }

  #port(machineId: string, ip: string): GuardedPort {
    return { machineId, veth: vethName(this.#tag, machineId), ip };
  }

  /** Bridge and firewall changes one at a time, so each reads the policy current when it runs. */
  #serially<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(fn);
    this.#queue = result.catch(() => undefined);
    return result;
  }
}

/**
 * A bridge's fixed MAC (machines pin it as their gateway's), strict reverse-path filtering (a
 * source that does not route back through this bridge is dropped) and no IPv6, as shell lines.
 */
function hardenBridge(bridge: string, gateway: string): string {
  return [
    `ip link set ${bridge} address ${macOf(gateway)}`,
    `echo 1 > /proc/sys/net/ipv4/conf/${bridge}/rp_filter`,
    `echo 1 > /proc/sys/net/ipv6/conf/${bridge}/disable_ipv6`,
  ].join('\n');
}
