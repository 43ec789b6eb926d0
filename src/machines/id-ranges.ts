import { randomInt } from 'node:crypto';
import { ID_RANGE_SIZE } from '../storage/id-shift.ts';
import type { IdRange } from '../storage/idmapped-mount.ts';
import type { Store } from './store.ts';

// Each machine's root is an unprivileged id on the host: its user namespace maps 0..65535 inside to
// a range of its own outside, far above the ids a host gives its users (2^28 and up, 61,439 ranges).
// A range is picked at random among the free ones so that two daemons on one host (each with its
// own state.db) rarely hand out the same one.

const FIRST_BASE = 2 ** 28;
const SLOTS = (2 ** 32 - FIRST_BASE) / ID_RANGE_SIZE - 1; // the last range would hold uid 2^32-1, which means "no id"

export function idRangeOf(uidBase: number): IdRange | undefined {
  return uidBase > 0 ? { base: uidBase, size: ID_RANGE_SIZE } : undefined;
}

/** A free range for a new machine; call inside the transaction that inserts it. */
export function allocateUidBase(store: Store): number {
  const used = store.usedUidBases();
  const start = randomInt(SLOTS);
  for (let i = 0; i < SLOTS; i++) {
    const base = FIRST_BASE + ((start + i) % SLOTS) * ID_RANGE_SIZE;
    if (!used.has(base)) return base;
  }
  throw new Error('every machine id range is taken');
}
