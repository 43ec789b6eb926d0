import { execFile } from 'node:child_process';
import { readdir, readlink, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { bridgePrefix, firewallTable } from './names.ts';

// What one daemon's network leaves on the host (its tag names all of it): a network namespace per
// machine (the machine's veth lives and dies with it), a bridge per app, and its nftables tables.
// Removed when `hangar serve` ends with no machine running, and by `hangar network prune`.

const run = promisify(execFile);

export type NetworkLeftovers = { namespaces: string[]; bridges: string[]; tables: string[] };

export async function findLeftovers(tag: string): Promise<NetworkLeftovers> {
  const namespaces = (await readdir('/run/netns').catch(() => [] as string[])).filter((n) => n.startsWith(`hgm-${tag}-`));
  const bridges = (await readdir('/sys/class/net')).filter((n) => n.startsWith(bridgePrefix(tag)));
  const listed = await run('nft', ['list', 'tables']).then((r) => r.stdout, () => '');
  const tables = listed.split('\n').map((l) => l.trim().replace(/^table /, '')).filter((t) => t.endsWith(` ${firewallTable(tag)}`));
  return { namespaces: namespaces.sort(), bridges: bridges.sort(), tables };
}

/** The namespaces among `namespaces` that some process still runs in (a machine, an exec). */
export async function namespacesInUse(namespaces: string[]): Promise<string[]> {
  const byInode = new Map<string, string>();
  for (const ns of namespaces) {
    const s = await stat(`/run/netns/${ns}`).catch(() => undefined);
    if (s) byInode.set(`net:[${s.ino}]`, ns);
  }
  if (byInode.size === 0) return [];
  const used = new Set<string>();
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const link = await readlink(`/proc/${pid}/ns/net`).catch(() => '');
    const ns = byInode.get(link);
    if (ns) used.add(ns);
  }
  return [...used].sort();
}

/** Removes them; what is already gone is skipped. */
export async function removeLeftovers(l: NetworkLeftovers): Promise<void> {
  const batch = [...l.namespaces.map((ns) => `netns del ${ns}`), ...l.bridges.map((b) => `link del ${b}`)];
  if (batch.length > 0) await pipe('ip', ['-force', '-batch', '-'], batch.join('\n') + '\n').catch(() => undefined);
  if (l.tables.length > 0) await pipe('nft', ['-f', '-'], l.tables.map((t) => `delete table ${t}\n`).join('')).catch(() => undefined);
}

function pipe(cmd: string, args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, (err) => (err ? reject(err) : resolve()));
    child.stdin!.end(input);
  });
}
