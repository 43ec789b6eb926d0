import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { HangarClient } from '../../src/sdk/index.ts';
import { bridgePrefix, firewallTable, networkTag } from '../../src/network/names.ts';

// Runs `hangar serve` as a user would, in its own process (so tests can kill -9 it), on a
// fresh data dir and a free loopback port. stop() and cleanup() leave nothing behind.

export const REPO = resolve(import.meta.dirname, '../..');
export const HANGAR = join(REPO, 'hangar');

// Every daemon and CLI call a test starts is a fresh Node that strips the types of, and compiles,
// the same few hundred modules (~0.3 s each time). Node's compile cache keeps that work for the
// next one; it is keyed by each source's hash, so an edited file is compiled afresh.
process.env.NODE_COMPILE_CACHE ??= join(tmpdir(), 'hangar-test-compile-cache');

export type TestDaemon = {
  dataDir: string;
  url: string;
  /** The edge proxy; send requests with Host: <app>.localhost. */
  proxyUrl: string;
  /** The edge proxy over HTTPS; trust the CA in <dataDir>/tls/ca.pem (or GET /v1/tls/ca.pem). */
  proxyTlsUrl: string;
  token: string;
  client: HangarClient;
  process: ChildProcess;
  output: () => string;
  /** SIGTERM; machines keep running. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash would. */
  kill(): Promise<void>;
};

export async function makeDataDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'hangar-test-'));
}

export async function startDaemon(dataDir: string, extraArgs: string[] = []): Promise<TestDaemon> {
  await rm(join(dataDir, 'api-url'), { force: true });
  await rm(join(dataDir, 'proxy-url'), { force: true });
  await rm(join(dataDir, 'proxy-tls-url'), { force: true });
  const child = spawn(HANGAR, ['serve', '--data-dir', dataDir, '--api-listen', '127.0.0.1:0', '--machine-cidr', testMachineCidr(dataDir), '--proxy-listen', '127.0.0.1:0', '--proxy-tls-listen', '127.0.0.1:0', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HANGAR_TOKEN: '' },
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const deadline = Date.now() + 30_000;
  // proxy-url is written last, once everything serves.
  let proxyUrl = '';
  while (!proxyUrl) {
    if (child.exitCode !== null) throw new Error(`hangar serve exited (${child.exitCode}):\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`hangar serve did not come up:\n${out}`);
    }
    proxyUrl = await readFile(join(dataDir, 'proxy-url'), 'utf8').then((s) => s.trim(), () => '');
    if (!proxyUrl) await new Promise((r) => setTimeout(r, 50));
  }
  const url = readFileSync(join(dataDir, 'api-url'), 'utf8').trim();
  const proxyTlsUrl = readFileSync(join(dataDir, 'proxy-tls-url'), 'utf8').trim();
  const token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
  const signalAndWait = async (sig: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    await exited;
  };
  return {
    dataDir, url, proxyUrl, proxyTlsUrl, token, process: child,
    client: new HangarClient({ baseUrl: url, token }),
    output: () => out,
    stop: () => signalAndWait('SIGTERM'),
    kill: () => signalAndWait('SIGKILL'),
  };
}

const pickedCidrs = new Map<string, string>();

/**
 * A /20 of the default range for the data dir's daemons, the same for every start of that data
 * dir, and one that no other test daemon of this process holds and nothing on the host routes
 * (a daemon refuses a range in use). HANGAR_TEST_NET (a second octet, 16–31) moves a whole test
 * run to another /16, so two runs on one host at once do not share subnets.
 */
export function testMachineCidr(dataDir: string): string {
  const key = resolve(dataDir);
  const known = pickedCidrs.get(key);
  if (known) return known;
  const second = Number(process.env.HANGAR_TEST_NET || '29');
  const held = new Set([...pickedCidrs].filter(([dir]) => existsSync(dir)).map(([, cidr]) => cidr));
  const routed = routedThirdOctets(second);
  const first = Number.parseInt(networkTag(dataDir), 16) % 16;
  let cidr = `172.${second}.${first * 16}.0/20`;
  for (let i = 0; i < 16; i++) {
    const block = (first + i) % 16;
    const candidate = `172.${second}.${block * 16}.0/20`;
    if (!held.has(candidate) && !routed.some((o) => o >= block * 16 && o < block * 16 + 16)) {
      cidr = candidate;
      break;
    }
  }
  pickedCidrs.set(key, cidr);
  return cidr;
}

/** Third octets of the host's IPv4 routes to 172.<second>.x.x (/proc/net/route, little-endian hex). */
function routedThirdOctets(second: number): number[] {
  const octets: number[] = [];
  for (const line of readFileSync('/proc/net/route', 'utf8').split('\n').slice(1)) {
    const dest = Number.parseInt(line.split('\t')[1] ?? '', 16);
    if (Number.isFinite(dest) && (dest & 0xff) === 172 && ((dest >>> 8) & 0xff) === second) octets.push((dest >>> 16) & 0xff);
  }
  return octets;
}

/** The network namespaces, bridges and firewall tables a daemon on this data dir made. */
function cleanupNetwork(dataDir: string): void {
  const tag = networkTag(dataDir);
  const quiet = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      return '';
    }
  };
  for (const line of quiet('ip', ['netns', 'list']).split('\n')) {
    const ns = line.split(' ')[0];
    if (ns?.startsWith(`hgm-${tag}-`)) quiet('ip', ['netns', 'del', ns]);
  }
  for (const line of quiet('ip', ['-o', 'link', 'show', 'type', 'bridge']).split('\n')) {
    const name = line.split(': ')[1]?.split('@')[0];
    if (name?.startsWith(bridgePrefix(tag))) quiet('ip', ['link', 'del', name]);
  }
  quiet('nft', ['delete', 'table', 'inet', firewallTable(tag)]);
  quiet('nft', ['delete', 'table', 'bridge', firewallTable(tag)]);
}

/**
 * Removes everything a test's daemon made: containers still running under its crun state dir
 * (killed by the PIDs crun reports for them), overlay mounts under the data dir, the dir itself.
 */
export async function cleanupDataDir(dataDir: string): Promise<void> {
  const crunRoot = join(dataDir, 'crun');
  try {
    const list = JSON.parse(execFileSync('crun', ['--root', crunRoot, 'list', '--format', 'json'], { encoding: 'utf8' }) || '[]') as Array<{ id: string; pid: number; status: string }>;
    let killed = 0;
    for (const c of list) {
      if (c.status === 'running' && c.pid > 0) {
        try {
          process.kill(c.pid, 'SIGKILL');
          killed++;
        } catch {
          /* already gone */
        }
      }
    }
    if (killed > 0) await new Promise((r) => setTimeout(r, 200));
  } catch {
    /* no crun state */
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    // The data dir itself too: the daemon bind-mounts it onto itself (see launcher-client.ts).
    .filter((p): p is string => !!p && (p === dataDir || p.startsWith(dataDir + '/')))
    .sort((a, b) => b.length - a.length);
  // A few hundred paths per umount, not a umount per path: a data dir of many machines has many
  // mounts, and each process costs ~20 ms. umount goes on past a path that is already gone.
  for (let i = 0; i < mounts.length; i += 200) {
    try {
      execFileSync('umount', ['-l', ...mounts.slice(i, i + 200)], { stdio: 'ignore' });
    } catch {
      /* some already gone */
    }
  }
  cleanupNetwork(dataDir);
  // The shim of a killed machine runs `crun delete` as it ends, which makes crun/ again; let
  // every process still working in the data dir finish before removing it.
  for (let i = 0; i < 50 && processesUsing(dataDir) > 0; i++) await new Promise((r) => setTimeout(r, 100));
  cleanupCgroups(dataDir);
  await rm(dataDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
}

/**
 * The cgroups (v1 and, on a hybrid host, v2) of the data dir's machines: a machine killed here
 * never had its runtime clean up after it. Only empty groups go; rmdir refuses the others.
 */
function cleanupCgroups(dataDir: string): void {
  const ids = new Set<string>();
  try {
    for (const id of readdirSync(join(dataDir, 'machines'))) ids.add(id);
  } catch {
    // no machines dir
  }
  // Destroyed machines' dirs are gone, but a group a process was still leaving may not be.
  try {
    const db = new DatabaseSync(join(dataDir, 'state.db'), { readOnly: true });
    for (const row of db.prepare('SELECT id FROM machines').all() as Array<{ id: string }>) ids.add(row.id);
    db.close();
  } catch {
    // no state
  }
  let hierarchies: string[];
  try {
    hierarchies = readdirSync('/sys/fs/cgroup');
  } catch {
    return;
  }
  for (const id of ids) {
    for (const h of hierarchies) {
      try {
        rmdirSync(join('/sys/fs/cgroup', h, 'hangar', id));
      } catch {
        // not there, or not empty
      }
    }
  }
}

/** How many processes name `dir` on their command line. */
function processesUsing(dir: string): number {
  let n = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) n++;
    } catch {
      // gone while we looked
    }
  }
  return n;
}

/** A daemon with a data dir, torn down completely by `close()` even if the test failed. */
export async function withDaemon(extraArgs: string[] = []): Promise<TestDaemon & { close(): Promise<void> }> {
  const dataDir = await makeDataDir();
  const daemon = await startDaemon(dataDir, extraArgs);
  return {
    ...daemon,
    close: async () => {
      await daemon.kill().catch(() => undefined);
      await cleanupDataDir(dataDir);
    },
  };
}

/** Raw HTTP for tests of the wire itself (status codes, error bodies). */
export async function http(
  d: { url: string; token: string },
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; text: string; headers: Headers }> {
  const res = await fetch(d.url + path, {
    method,
    headers: {
      authorization: `Bearer ${d.token}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, body: parsed, text, headers: res.headers };
}
