import { createHash } from 'node:crypto';
import { resolve } from 'node:path';

// Host-wide names of what one daemon makes (network namespaces, bridges, veths, its nftables
// table). A tag from the data dir keeps two daemons on one host (tests do this) apart.

export function networkTag(dataDir: string): string {
  return createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 4);
}

export function netnsName(tag: string, machineId: string): string {
  return `hgm-${tag}-${machineId}`;
}

/** Interface names are at most 15 bytes: "hgb-" + tag + "-" + index (≤ 5 digits). */
export function bridgeName(tag: string, subnetIndex: number): string {
  return `hgb-${tag}-${subnetIndex}`;
}

export function bridgePrefix(tag: string): string {
  return `hgb-${tag}-`;
}

/** The host end of a machine's veth; machine ids are random, 13 of their 14 hex digits fit. */
export function vethName(machineId: string): string {
  return `hv${machineId.slice(1)}`;
}

export function firewallTable(tag: string): string {
  return `hangar-${tag}`;
}
