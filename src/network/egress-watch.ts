import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { ipInRange, parseMachineCidr, type MachineRange } from './addresses.ts';
import { deniedLogPrefix } from './firewall.ts';
import { followProcess, type LineProcess } from './line-process.ts';

// What machines send beyond their apps, as the kernel sees it: connections from conntrack's
// event stream (`conntrack -E`, opened and destroyed, with byte counts when conntrack accounting
// is on; a closed TCP connection's entry expires a second later (firewall.ts), and as the kernel
// only reaps expired entries in its periodic sweep, up to a minute on, a closing connection
// has the daemon list the range's TCP entries shortly after, which reaps them at once) and refusals from the kernel log lines of the firewall's `denied` chain (firewall.ts),
// read with `dmesg --follow-new`. Only sources in the daemon's machine range count, and only
// destinations outside it (a machine's own gateway and app are not egress).

/** A flow from a machine: `src` is its address; `dst` ADDRESS:PORT or ADDRESS. */
export type Flow = { src: string; proto: string; dst: string };

export type EgressObservation =
  | ({ kind: 'connect'; id: string } & Flow)
  | ({ kind: 'close'; id: string; bytesOut: number; bytesIn: number; packetsOut: number; packetsIn: number } & Flow)
  | ({ kind: 'denied'; sport?: string } & Flow);

/**
 * One line of `conntrack -E -o timestamp,id`:
 * `[1796229183.617374]\t[DESTROY] tcp 6 TIME_WAIT src=A dst=B sport=1 dport=2 packets=5 bytes=271 src=B dst=A ... [ASSURED] id=3856177310`.
 * The first src/dst/ports/counters are the original direction (from the machine), the second the reply.
 */
export function parseConntrackLine(line: string): Extract<EgressObservation, { kind: 'connect' | 'close' }> | 'closing' | undefined {
  if (/\[UPDATE\]\s+tcp\s.*\s(TIME_WAIT|CLOSE)\s/.test(line)) return 'closing';
  const m = /\[(NEW|DESTROY)\]\s+(\w+)\s/.exec(line);
  if (!m) return undefined;
  const orig: Record<string, string> = {};
  const reply: Record<string, string> = {};
  for (const [, key, value] of line.matchAll(/\b(src|dst|sport|dport|packets|bytes|id)=(\S+)/g)) {
    const side = key! in orig && key !== 'id' ? reply : orig;
    if (!(key! in side)) side[key!] = value!;
  }
  if (!orig.src || !orig.dst || !orig.id) return undefined;
  const flow = { src: orig.src, proto: m[2]!, dst: orig.dport ? `${orig.dst}:${orig.dport}` : orig.dst, id: orig.id };
  if (m[1] === 'NEW') return { kind: 'connect', ...flow };
  return { kind: 'close', ...flow, bytesOut: Number(orig.bytes ?? 0), bytesIn: Number(reply.bytes ?? 0), packetsOut: Number(orig.packets ?? 0), packetsIn: Number(reply.packets ?? 0) };
}

/** One kernel log line of the denied chain: `... hangar-<tag>-denied: IN=.. OUT=.. SRC=A DST=B ... PROTO=TCP SPT=1 DPT=2 ...`. */
export function parseDeniedLine(line: string, prefix: string): Extract<EgressObservation, { kind: 'denied' }> | undefined {
  const at = line.indexOf(prefix);
  if (at < 0) return undefined;
  const fields = Object.fromEntries([...line.slice(at + prefix.length).matchAll(/\b([A-Z]+)=(\S*)/g)].map((f) => [f[1]!, f[2]!]));
  if (!fields.SRC || !fields.DST || !fields.PROTO) return undefined;
  const proto = fields.PROTO.toLowerCase();
  return { kind: 'denied', src: fields.SRC, proto, dst: fields.DPT ? `${fields.DST}:${fields.DPT}` : fields.DST, ...(fields.SPT ? { sport: fields.SPT } : {}) };
}

/** How long after a connection closes its entry is reaped: past its 1-second expiry. */
const REAP_AFTER_MS = 1500;

export type EgressWatchOptions = {
  tag: string;
  machineCidr: string;
  onObservation: (o: EgressObservation) => void;
  onProblem: (message: string) => void;
};

/** Starts both readers; conntrack accounting is turned on first (host-wide: it counts bytes per flow). */
export async function watchEgress(opts: EgressWatchOptions): Promise<{ close(): void }> {
  await writeFile('/proc/sys/net/netfilter/nf_conntrack_acct', '1\n').catch((err: Error) => opts.onProblem(`no byte counts in the egress log: ${err.message}`));
  const range: MachineRange = parseMachineCidr(opts.machineCidr);
  const outbound = (o: EgressObservation) => ipInRange(range, o.src) && !ipInRange(range, o.dst.split(':')[0]!);
  const prefix = deniedLogPrefix(opts.tag);
  let sweep: NodeJS.Timeout | undefined;
  const reapSoon = () => {
    sweep ??= setTimeout(() => {
      // Listing is what reaps; the list itself is not needed.
      const lister = spawn('conntrack', ['-L', '-p', 'tcp', '-s', opts.machineCidr], { stdio: 'ignore' });
      lister.once('error', () => (sweep = undefined));
      lister.once('exit', () => (sweep = undefined));
    }, REAP_AFTER_MS);
  };
  const readers: LineProcess[] = [
    followProcess('conntrack', ['-E', '-e', 'NEW,UPDATE,DESTROY', '-o', 'timestamp,id', '-s', opts.machineCidr], (line) => {
      const o = parseConntrackLine(line);
      if (o === 'closing') reapSoon();
      else if (o && outbound(o)) opts.onObservation(o);
    }, opts.onProblem),
    followProcess('dmesg', ['--follow-new', '--kernel', '--raw'], (line) => {
      const o = parseDeniedLine(line, prefix);
      if (o && outbound(o)) opts.onObservation(o);
    }, opts.onProblem),
  ];
  return {
    close: () => {
      clearTimeout(sweep);
      readers.forEach((r) => r.close());
    },
  };
}
