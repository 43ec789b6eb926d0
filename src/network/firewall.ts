import type { Egress } from '../protocol/app-settings.ts';
import { bridgeName, bridgePrefix, firewallTable } from './names.ts';

// The nftables table of one daemon, as scripts for `nft -f` (each script is one transaction, so
// a change is all there or not at all). Layout:
//
//   forward     replies to connections machines opened come back in; packets from a bridge go
//               to its app's chain (the `apps` map); anything else bound for a bridge is dropped,
//               so neither other hosts nor other apps open connections to machines.
//   app-<n>     one app's rules: only its own subnet as source, its own bridge yes, other bridges
//               no, then its egress policy.
//   egress-<n>  for an app with egress `domains`, the addresses its gateway's DNS answered for
//               allowed names, each for the answer's TTL (egress-sets.ts). A connection to one is
//               marked with its policy's mark, so it lives on after the address times out, and
//               is cut (checked against the set again) once the policy changes.
//   input       machines reach the host only at their own gateway (the `gateways` set of bridge .
//               gateway pairs): its DNS, API, tokenizer and egress proxy (80, 443) ports, ping, and replies to what the host opened.
//               Any other host address, on any protocol, is dropped.
//
//   denied      where egress that a policy refuses ends: logged to the kernel log with
//               DENIED_LOG_PREFIX (at most 10 packets a second per machine, burst 20; the
//               egress log reads them back), then dropped.
//   tcp-ends    connections machines open leave conntrack 1 s after they close (not 120 s), so
//               the egress log gets their byte counts soon after.
//
// The bridge table of port-guard.ts has already dropped forged sources and IPv6 by then; the
// source checks here are a second line, as is strict rp_filter on the bridges.
//   postrouting machine addresses leaving the host are masqueraded to the host's address.

/** The internal API port on each app gateway, as on Fly (`_api.internal:4280`). */
export const GATEWAY_API_PORT = 4280;
/** The tokenizer proxy on each app gateway (`_tokenizer.internal:4281`). */
export const TOKENIZER_PORT = 4281;
/** The egress proxy of app secrets on each app gateway (names the app's secrets allow resolve to it). */
export const EGRESS_HTTPS_PORT = 443;
export const EGRESS_HTTP_PORT = 80;

/**
 * `subnet` is the app's CIDR (a.b.c.0/24), `gateway` the bridge's address in it. `allowed`: what
 * goes into its egress set (after emptying it), for a new policy (none) or carried over from a
 * table being replaced; absent, the set keeps what it holds.
 */
export type BridgeRules = { index: number; subnet: string; gateway: string; egress: Egress; allowed?: AllowedAddress[] };

/** An address in an app's egress set, and for how many more seconds. */
export type AllowedAddress = { ip: string; timeoutS: number };

/** What the kernel log lines of refused egress start with. */
export function deniedLogPrefix(tag: string): string {
  return `hangar-${tag}-denied: `;
}

export function egressSetName(index: number): string {
  return `egress-${index}`;
}

/**
 * The conntrack mark of connections a `domains` policy let out: a hash of the policy, so it is
 * the same after a daemon restart (open connections live on) and differs once the policy changes.
 */
export function egressMark(egress: Egress): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(JSON.stringify(egress))) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash || 1;
}

/** Adds addresses to an app's egress set; one already there gets the new timeout. */
export function allowScript(tag: string, index: number, addresses: AllowedAddress[]): string {
  if (addresses.length === 0) return '';
  return `add element inet ${firewallTable(tag)} ${egressSetName(index)} { ${addresses.map((a) => `${a.ip} timeout ${a.timeoutS}s`).join(', ')} }\n`;
}

/** The whole table, replacing whatever this daemon installed before. */
export function tableScript(tag: string, machineCidr: string, bridges: BridgeRules[]): string {
  const table = firewallTable(tag);
  const all = `"${bridgePrefix(tag)}*"`;
  return `table inet ${table} {}
delete table inet ${table}
table inet ${table} {
  map apps { type ifname : verdict; }
  set gateways { type ifname . ipv4_addr; }
  set denied-log { type ipv4_addr; size 65536; flags dynamic,timeout; timeout 1m; }
  ct timeout tcp-ends {
    protocol tcp; l3proto ip
    policy = { time_wait: 1, close: 1 }
  }
  chain denied {
    update @denied-log { ip saddr limit rate 10/second burst 20 packets } log prefix "${deniedLogPrefix(tag)}" level info
    drop
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname != ${all} oifname ${all} ct direction reply accept
    iifname != ${all} oifname ${all} ct state related accept
    iifname vmap @apps
    oifname ${all} drop
  }
  chain input {
    type filter hook input priority 0; policy accept;
    iifname . ip daddr @gateways ct state established,related accept
    iifname . ip daddr @gateways icmp type echo-request accept
    iifname . ip daddr @gateways meta l4proto { tcp, udp } th dport 53 accept
    iifname . ip daddr @gateways tcp dport { ${GATEWAY_API_PORT}, ${TOKENIZER_PORT}, ${EGRESS_HTTP_PORT}, ${EGRESS_HTTPS_PORT} } accept
    iifname ${all} goto denied
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${machineCidr} oifname != ${all} masquerade
  }
}
${bridges.map((b) => bridgeScript(tag, b)).join('')}`;
}

/** Installs one bridge's chain and entries, or rebuilds its chain (for a new egress policy). */
export function bridgeScript(tag: string, b: BridgeRules): string {
  const table = `inet ${firewallTable(tag)}`;
  const bridge = `"${bridgeName(tag, b.index)}"`;
  const chain = `app-${b.index}`;
  const set = egressSetName(b.index);
  const refill = b.allowed ? `flush set ${table} ${set}\n${allowScript(tag, b.index, b.allowed)}` : '';
  return `add set ${table} ${set} { type ipv4_addr; flags timeout; }
${refill}add chain ${table} ${chain}
flush chain ${table} ${chain}
add rule ${table} ${chain} ip saddr != ${b.subnet} drop
add rule ${table} ${chain} oifname ${bridge} accept
add rule ${table} ${chain} oifname "${bridgePrefix(tag)}*" goto denied
add rule ${table} ${chain} meta l4proto tcp ct state new ct timeout set "tcp-ends"
${egressRules(b.egress, set).map((rule) => `add rule ${table} ${chain} ${rule}\n`).join('')}add element ${table} apps { ${bridge} : jump ${chain} }
add element ${table} gateways { ${bridge} . ${b.gateway} }
`;
}

/** Takes out what bridgeScript installed. */
export function removeBridgeScript(tag: string, index: number, gateway: string): string {
  const table = `inet ${firewallTable(tag)}`;
  const bridge = `"${bridgeName(tag, index)}"`;
  return `delete element ${table} apps { ${bridge} }
delete element ${table} gateways { ${bridge} . ${gateway} }
delete chain ${table} app-${index}
delete set ${table} ${egressSetName(index)}
`;
}

/**
 * Link-local addresses are where clouds serve instance metadata (169.254.169.254), often with the
 * host's credentials: `allow` means the outside world, not that. A cidrs list may name them.
 */
const LINK_LOCAL = '169.254.0.0/16';

function egressRules(egress: Egress, set: string): string[] {
  switch (egress.policy) {
    case 'allow':
      return [`ip daddr ${LINK_LOCAL} goto denied`, 'accept'];
    case 'deny':
      return ['goto denied'];
    case 'cidrs':
      return [`ip daddr { ${egress.cidrs.join(', ')} } accept`, 'goto denied'];
    case 'domains': {
      const mark = `0x${egressMark(egress).toString(16)}`;
      // A name may resolve to a metadata address; naming it does not open it (cidrs can).
      return [`ct state established,related ct mark ${mark} accept`, `ip daddr ${LINK_LOCAL} goto denied`, `ip daddr @${set} ct mark set ${mark} accept`, 'goto denied'];
    }
  }
}
