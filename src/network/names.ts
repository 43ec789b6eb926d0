import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';

// Host-wide names of what one daemon makes (network namespaces, bridges, veths, its nftables
// table). A tag from the data dir keeps two daemons on one host (tests do this) apart.

export function networkTag(dataDir: string): string {
  return createHash('sha256').update(canonicalDataDir(dataDir)).digest('hex').slice(0, 4);
}

/**
 * The data dir as one path however it was spelled (`DIR/`, a symlink to DIR): what the daemon
 * and `hangar network prune` name things by. A dir that is gone keeps its absolute spelling.
 */
export function canonicalDataDir(dataDir: string): string {
  try {
    return realpathSync(dataDir);
  } catch {
    return resolve(dataDir);
  }
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

/**
 * The host end of a machine's veth: "hv" + tag + the last 9 of the id's 14 random hex digits. The
 * tag is in the name because the anti-spoofing rules (port-guard.ts) can only tell this daemon's
 * bridge ports from others' by name (this kernel has no bridge `meta ibrname`).
 */
export function vethName(tag: string, machineId: string): string {
  return `${vethPrefix(tag)}${machineId.slice(-9)}`;
}

export function vethPrefix(tag: string): string {
  return `hv${tag}`;
}

/**
 * A fixed MAC for an address (02:48 + its four bytes, locally administered, as Docker does): the
 * anti-spoofing rules name it, and a gateway's stays put as machines join its bridge (a bridge
 * otherwise takes the lowest MAC of its ports, and a machine's pinned neighbour entry would go stale).
 */
export function macOf(ip: string): string {
  return ['02', '48', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

export function firewallTable(tag: string): string {
  return `hangar-${tag}`;
}
