import type { Owner } from './machine-fs-walk.ts';

// A machine in its own user namespace sees ids 0..65535; on the host they are base + id. What the
// daemon writes into a machine, and what it reports of a machine's files, goes through this.

export const ID_RANGE_SIZE = 65536;
const NOBODY = 65534;

export class IdShift {
  readonly #base: number;
  /** The machine's root as the host sees it: the owner of what the daemon makes in the machine. */
  readonly root: Owner;

  /** `base` 0 is a machine without a user namespace of its own: ids are the host's. */
  constructor(base: number) {
    this.#base = base;
    this.root = { uid: base, gid: base };
  }

  /** False for a machine that sees the host's ids. */
  get shifted(): boolean {
    return this.#base !== 0;
  }

  /** A machine's id on the host; an id past the range becomes the machine's nobody. */
  toHost(id: number): number {
    if (this.#base === 0) return id;
    return this.#base + (id >= 0 && id < ID_RANGE_SIZE ? id : NOBODY);
  }

  /** A host id as the machine sees it; one outside its range (the kernel's overflow id) is nobody. */
  toGuest(id: number): number {
    if (this.#base === 0) return id;
    const inside = id - this.#base;
    return inside >= 0 && inside < ID_RANGE_SIZE ? inside : NOBODY;
  }
}
