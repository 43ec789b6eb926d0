import { appendFile, rename, stat } from 'node:fs/promises';
import type { EgressEvent } from '../protocol/egress-log.ts';
import type { EgressObservation } from '../network/egress-watch.ts';
import type { Lookup } from '../network/internal-dns.ts';
import { followLines, tailLines } from './log-files.ts';

// Each machine's egress log: JSON lines in `<machine dir>/egress.log`, rotated to `egress.log.1`
// when it passes EGRESS_LOG_MAX_BYTES, so a machine keeps at most twice that (512 KiB, some
// 2,000–4,000 events) however much it talks. Written from the DNS server's lookups and the
// kernel's connection events (egress-watch.ts), which name a machine by its private address.
// Events the daemon was not running for (a restart) are not there.

export const EGRESS_LOG_MAX_BYTES = 256 * 1024;
/** A refused attempt retried (TCP resends its SYN) within this long is one attempt. */
const DENIED_REPEAT_MS = 30_000;
/** Connections whose opening is remembered, for their duration (oldest forgotten first). */
const MAX_OPEN = 65_536;

export type EgressLogOptions = {
  fileOf: (machineId: string) => string;
  /** The machine (not destroyed) holding a private address. */
  machineAt: (ip: string) => string | undefined;
};

type Pending = { lines: string[]; writing: Promise<void> };

export class EgressLog {
  readonly #fileOf: (machineId: string) => string;
  readonly #machineAt: (ip: string) => string | undefined;
  readonly #pending = new Map<string, Pending>();
  readonly #opened = new Map<string, number>();
  readonly #denied = new Map<string, number>();

  constructor(opts: EgressLogOptions) {
    this.#fileOf = opts.fileOf;
    this.#machineAt = opts.machineAt;
  }

  lookup(l: Lookup): void {
    this.#record(l.from, { kind: 'dns', time: iso(), name: l.name, type: l.type, verdict: l.verdict, rcode: l.rcode, answers: l.addresses });
  }

  observe(o: EgressObservation): void {
    const now = Date.now();
    if (o.kind === 'connect') {
      if (this.#opened.size >= MAX_OPEN) this.#opened.delete(this.#opened.keys().next().value!);
      this.#opened.set(o.id, now);
      this.#record(o.src, { kind: 'connect', time: iso(now), proto: o.proto, dst: o.dst, verdict: 'allowed' });
    } else if (o.kind === 'close') {
      const openedAt = this.#opened.get(o.id);
      this.#opened.delete(o.id);
      this.#record(o.src, {
        kind: 'close', time: iso(now), proto: o.proto, dst: o.dst,
        bytes_out: o.bytesOut, bytes_in: o.bytesIn, packets_out: o.packetsOut, packets_in: o.packetsIn,
        ...(openedAt !== undefined ? { duration_ms: now - openedAt } : {}),
      });
    } else {
      const key = `${o.src}:${o.sport ?? ''}>${o.dst}/${o.proto}`;
      const last = this.#denied.get(key);
      if (last !== undefined && now - last < DENIED_REPEAT_MS) return;
      for (const [k, at] of this.#denied) if (now - at >= DENIED_REPEAT_MS) this.#denied.delete(k);
      this.#denied.set(key, now);
      this.#record(o.src, { kind: 'connect', time: iso(now), proto: o.proto, dst: o.dst, verdict: 'denied' });
    }
  }

  /** The last `count` events (current file only), each the JSON line it is stored as, and the offset to follow from. */
  tail(machineId: string, count: number): Promise<{ lines: string[]; offset: number }> {
    return tailLines(this.#fileOf(machineId), count);
  }

  /** The events written after `offset`, as the JSON lines they are stored as, until the signal aborts. */
  follow(machineId: string, offset: number, signal: AbortSignal): AsyncGenerator<string[]> {
    return followLines(this.#fileOf(machineId), offset, signal);
  }

  /** Waits for what is written to be on disk. */
  async flush(): Promise<void> {
    await Promise.all([...this.#pending.values()].map((p) => p.writing));
  }

  #record(ip: string, event: EgressEvent): void {
    const id = this.#machineAt(ip);
    if (!id) return;
    let pending = this.#pending.get(id);
    if (!pending) this.#pending.set(id, (pending = { lines: [], writing: Promise.resolve() }));
    pending.lines.push(JSON.stringify(event));
    // One write per machine for the events of one turn of the event loop.
    if (pending.lines.length === 1) {
      const p = pending;
      p.writing = p.writing.then(() => new Promise<void>((resolve) => setImmediate(resolve))).then(() => this.#write(id, p));
    }
  }

  async #write(id: string, pending: Pending): Promise<void> {
    const text = pending.lines.join('\n') + '\n';
    pending.lines = [];
    const file = this.#fileOf(id);
    try {
      const size = await stat(file).then((s) => s.size, () => 0);
      if (size > 0 && size + text.length > EGRESS_LOG_MAX_BYTES) await rename(file, `${file}.1`);
      await appendFile(file, text);
    } catch {
      // The machine's directory is gone (destroyed): its log goes with it.
    }
    if (pending.lines.length === 0 && this.#pending.get(id) === pending) this.#pending.delete(id);
  }
}

function iso(ms = Date.now()): string {
  return new Date(ms).toISOString();
}

/** The events of stored lines; a line that is not one (a write cut short) is passed over. */
export function parseEgressLines(lines: string[]): EgressEvent[] {
  return lines.flatMap((line) => {
    try {
      return [JSON.parse(line) as EgressEvent];
    } catch {
      return [];
    }
  });
}
