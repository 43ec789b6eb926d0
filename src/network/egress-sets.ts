import { execFile } from 'node:child_process';
import type { Egress } from '../protocol/app-settings.ts';
import { egressMark, type AllowedAddress } from './firewall.ts';
import { firewallTable } from './names.ts';

// What each app's egress set lets out, as the daemon knows it: the policy its chain was built
// from and when each address's element times out. It decides which DNS answers need an nft
// call at all (most repeat an address already in for longer) and never shortens an element (nft's
// `add element` would: another name's shorter TTL must not cut the first one's short).

/** An address from a DNS answer, with the answer's TTL. */
export type ResolvedAddress = { ip: string; ttlS: number };

/**
 * An answer's addresses must stay reachable for its TTL, but at least a minute (resolvers and
 * programs keep answers a little past their TTL, and a 0-second TTL must still allow the connect
 * that follows) and at most a day. They go in for twice that, so that answers repeated within it
 * (most lookups) need no nft call: one is made only when less than that time is left.
 */
export const MIN_ALLOW_S = 60;
export const MAX_ALLOW_S = 86_400;

type AppSet = { policy: string; untilMs: Map<string, number> };

export class AllowedSets {
  readonly #sets = new Map<number, AppSet>();

  /** The chain of `index` now enforces `egress`, and its set holds `addresses`. */
  installed(index: number, egress: Egress, addresses: AllowedAddress[], nowMs = Date.now()): void {
    this.#sets.set(index, { policy: JSON.stringify(egress), untilMs: new Map(addresses.map((a) => [a.ip, nowMs + a.timeoutS * 1000])) });
  }

  isCurrent(index: number, egress: Egress): boolean {
    return this.#sets.get(index)?.policy === JSON.stringify(egress);
  }

  /** Records the addresses and returns those whose element must be added or lengthened. */
  extend(index: number, addresses: ResolvedAddress[], nowMs = Date.now()): AllowedAddress[] {
    const set = this.#sets.get(index);
    if (!set) return [];
    for (const [ip, until] of set.untilMs) if (until <= nowMs) set.untilMs.delete(ip);
    const wanted = new Map<string, number>();
    for (const a of addresses) {
      const needS = Math.min(MAX_ALLOW_S, Math.max(MIN_ALLOW_S, Math.round(a.ttlS)));
      wanted.set(a.ip, Math.max(wanted.get(a.ip) ?? 0, needS));
    }
    const added: AllowedAddress[] = [];
    for (const [ip, needS] of wanted) {
      if ((set.untilMs.get(ip) ?? 0) >= nowMs + needS * 1000) continue;
      const timeoutS = 2 * needS;
      set.untilMs.set(ip, nowMs + timeoutS * 1000);
      added.push({ ip, timeoutS });
    }
    return added;
  }

  forget(index: number): void {
    this.#sets.delete(index);
  }

  clear(): void {
    this.#sets.clear();
  }
}

/**
 * The egress sets of this daemon's table as it stands (before a restarted daemon replaces it):
 * per subnet index, the mark its chain sets and the addresses with their time left.
 */
export async function readAllowed(tag: string): Promise<Map<number, { mark: number | undefined; addresses: AllowedAddress[] }>> {
  const out = new Map<number, { mark: number | undefined; addresses: AllowedAddress[] }>();
  const text = await new Promise<string>((resolve) => {
    execFile('nft', ['-j', 'list', 'table', 'inet', firewallTable(tag)], { maxBuffer: 64 * 2 ** 20 }, (err, stdout) => resolve(err ? '' : stdout));
  });
  if (!text) return out;
  type Item = { set?: { name: string; elem?: unknown[] }; rule?: { chain: string; expr: unknown[] } };
  const items = (JSON.parse(text) as { nftables: Item[] }).nftables;
  const entry = (index: number) => out.get(index) ?? out.set(index, { mark: undefined, addresses: [] }).get(index)!;
  for (const item of items) {
    const set = item.set && /^egress-(\d+)$/.exec(item.set.name);
    if (set) {
      for (const e of item.set!.elem ?? []) {
        const elem = (e as { elem?: { val?: unknown; expires?: number } }).elem;
        if (typeof elem?.val === 'string' && typeof elem.expires === 'number' && elem.expires > 0) entry(Number(set[1])).addresses.push({ ip: elem.val, timeoutS: elem.expires });
      }
    }
    const chain = item.rule && /^app-(\d+)$/.exec(item.rule.chain);
    if (chain) {
      const mark = markSetBy(item.rule!.expr);
      if (mark !== undefined) entry(Number(chain[1])).mark = mark;
    }
  }
  return out;
}

/** The value of a `ct mark set N` statement among a rule's expressions. */
function markSetBy(expr: unknown[]): number | undefined {
  for (const e of expr) {
    const mangle = (e as { mangle?: { key?: { ct?: { key?: string } }; value?: unknown } }).mangle;
    if (mangle?.key?.ct?.key === 'mark' && typeof mangle.value === 'number') return mangle.value;
  }
  return undefined;
}

/** Whether a table carried the mark of `egress` (so its set was filled under this policy). */
export function sameMark(egress: Egress, mark: number | undefined): boolean {
  return egress.policy === 'domains' && mark === egressMark(egress);
}
