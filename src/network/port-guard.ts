import { firewallTable, macOf, vethPrefix } from './names.ts';

// Anti-spoofing on every machine's bridge port, in a `bridge` table of its own (same name as the
// daemon's `inet` table): a frame from a machine's veth must carry the machine's own MAC, and be
// IPv4 from its own address or ARP that claims only its own address and MAC. Everything else
// (a forged source, ARP claiming the gateway or a neighbour, IPv6, VLAN tags) is dropped before
// the bridge learns from it, routes it or hands it to the host. A port of this daemon with no
// chain yet (between link creation and its rules) drops everything: the guard fails closed.
//
//   prerouting  ports of this daemon (by name, `hv<tag>*`) jump to their machine's chain via the
//               `ports` map; what comes back, or has no entry, is dropped.
//   m-<id>      one machine: its MAC, then its IPv4 source or its ARP claim.

export type GuardedPort = { machineId: string; veth: string; ip: string };

/** The whole table, replacing what this daemon installed before. */
export function guardTableScript(tag: string, ports: GuardedPort[]): string {
  const table = `bridge ${firewallTable(tag)}`;
  const ours = `"${vethPrefix(tag)}*"`;
  return `table ${table} {}
delete table ${table}
table ${table} {
  map ports { type ifname : verdict; }
  chain prerouting {
    type filter hook prerouting priority -200; policy accept;
    iifname ${ours} iifname vmap @ports
    iifname ${ours} drop
  }
}
${ports.map((p) => portScript(tag, p)).join('')}`;
}

/** One machine's chain and its entry in the ports map (idempotent). */
export function portScript(tag: string, p: GuardedPort): string {
  const table = `bridge ${firewallTable(tag)}`;
  const chain = `m-${p.machineId}`;
  const mac = macOf(p.ip);
  return `add chain ${table} ${chain}
flush chain ${table} ${chain}
add rule ${table} ${chain} ether saddr != ${mac} drop
add rule ${table} ${chain} ether type ip ip saddr ${p.ip} accept
add rule ${table} ${chain} ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether ${mac} arp saddr ip ${p.ip} accept
add rule ${table} ${chain} drop
add element ${table} ports { "${p.veth}" : jump ${chain} }
`;
}

/** Takes out what portScript installed, whether it is there or not (the table must be). */
export function removePortScript(tag: string, machineId: string, veth: string): string {
  const table = `bridge ${firewallTable(tag)}`;
  const chain = `m-${machineId}`;
  return `add chain ${table} ${chain}
add element ${table} ports { "${veth}" : jump ${chain} }
delete element ${table} ports { "${veth}" }
delete chain ${table} ${chain}
`;
}
