import { readdir, readFile, readlink } from 'node:fs/promises';

// What `GET …/ps` reports of a machine's processes, read from the host's /proc. Pids are as the
// machine sees them (its own pid namespace); sockets are those the process listens on.

export type ListenSocket = { proto: 'tcp' | 'udp'; address: string };

export type ProcessStat = {
  pid: number;
  command: string;
  directory: string;
  /** Resident memory, bytes. */
  rss: number;
  /** CPU use over the process's life, percent of one core. */
  cpu: number;
  /** User CPU time, ms. */
  rtime: number;
  /** System CPU time, ms. */
  stime: number;
  listen_sockets: ListenSocket[];
};

const CLOCK_TICKS_PER_S = 100;
const TCP_LISTEN = '0A';
const UDP_UNCONNECTED = '07';

/** Stats for host pids of one machine whose root is mounted at `rootfs`; vanished pids are left out. */
export async function processStats(hostPids: number[], rootfs: string): Promise<ProcessStat[]> {
  const uptimeS = Number.parseFloat((await readFile('/proc/uptime', 'utf8')).split(' ')[0]!);
  const stats = await Promise.all(hostPids.map((pid) => statOne(pid, rootfs, uptimeS).catch(() => undefined)));
  return stats.filter((s): s is ProcessStat => s !== undefined).sort((a, b) => a.pid - b.pid);
}

async function statOne(hostPid: number, rootfs: string, uptimeS: number): Promise<ProcessStat> {
  const [stat, status, cmdline, cwd] = await Promise.all([
    readFile(`/proc/${hostPid}/stat`, 'utf8'),
    readFile(`/proc/${hostPid}/status`, 'utf8'),
    readFile(`/proc/${hostPid}/cmdline`, 'utf8'),
    readlink(`/proc/${hostPid}/cwd`).catch(() => ''),
  ]);
  // Fields after "(comm)": state is field 3, utime 14, stime 15, starttime 22 (1-based, man 5 proc).
  const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const field = (n: number) => Number.parseInt(after[n - 3] ?? '0', 10);
  const utime = field(14);
  const stime = field(15);
  const ageS = Math.max(uptimeS - field(22) / CLOCK_TICKS_PER_S, 0.001);
  const nsPid = /^NSpid:\s+(.+)$/m.exec(status)?.[1]?.trim().split(/\s+/).pop();
  const rssKb = Number.parseInt(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? '0', 10);
  const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
  return {
    pid: Number.parseInt(nsPid ?? String(hostPid), 10),
    command: cmdline.split('\0').filter(Boolean).join(' ') || `[${comm}]`,
    directory: guestPath(cwd, rootfs),
    rss: rssKb * 1024,
    cpu: Math.round(((utime + stime) / CLOCK_TICKS_PER_S / ageS) * 100),
    rtime: (utime * 1000) / CLOCK_TICKS_PER_S,
    stime: (stime * 1000) / CLOCK_TICKS_PER_S,
    listen_sockets: await listenSockets(hostPid),
  };
}

/** The host sees a machine's cwd below the rootfs mount; the machine sees it from `/`. */
function guestPath(hostPath: string, rootfs: string): string {
  if (hostPath === rootfs) return '/';
  return hostPath.startsWith(rootfs + '/') ? hostPath.slice(rootfs.length) : hostPath;
}

async function listenSockets(hostPid: number): Promise<ListenSocket[]> {
  const fds = await readdir(`/proc/${hostPid}/fd`).catch(() => []);
  const inodes = new Set<string>();
  for (const fd of fds) {
    const target = await readlink(`/proc/${hostPid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) inodes.add(m[1]!);
  }
  if (inodes.size === 0) return [];
  const sockets: ListenSocket[] = [];
  for (const [file, proto, listening] of [
    ['tcp', 'tcp', TCP_LISTEN],
    ['tcp6', 'tcp', TCP_LISTEN],
    ['udp', 'udp', UDP_UNCONNECTED],
    ['udp6', 'udp', UDP_UNCONNECTED],
  ] as const) {
    const table = await readFile(`/proc/${hostPid}/net/${file}`, 'utf8').catch(() => '');
    for (const line of table.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[3] !== listening || !inodes.has(cols[9]!)) continue;
      sockets.push({ proto, address: decodeAddress(cols[1]!) });
    }
  }
  return sockets;
}

/** /proc/net addresses are hex, in host byte order per 32-bit word: "0100007F:1F90" is 127.0.0.1:8080. */
export function decodeAddress(hex: string): string {
  const [ip, port] = hex.split(':') as [string, string];
  const portNum = Number.parseInt(port, 16);
  const words = ip.match(/.{8}/g) ?? [];
  const bytes = words.flatMap((w) => (w.match(/../g) ?? []).reverse().map((b) => Number.parseInt(b, 16)));
  if (bytes.length === 4) return `${bytes.join('.')}:${portNum}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return `[${groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')}]:${portNum}`;
}
