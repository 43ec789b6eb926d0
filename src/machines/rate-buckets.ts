// Token buckets by key, in memory: a bucket holds up to `burst` tokens and refills at `perSecond`.
// A daemon restart refills them all, which only ever lets a robot a little further, never less.

type Bucket = { tokens: number; at: number };

export type Take = { ok: true } | { ok: false; retryAfterMs: number };

/** Keys kept before full buckets are swept: a bucket that refilled says nothing a new one would not. */
const SWEEP_AT = 10_000;

export class RateBuckets {
  readonly #buckets = new Map<string, Bucket>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Takes one token from `key`'s bucket, or says how long until one is there. */
  take(key: string, perSecond: number, burst: number): Take {
    const now = this.#now();
    const b = this.#refilled(key, perSecond, burst, now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      this.#buckets.set(key, b);
      if (this.#buckets.size > SWEEP_AT) this.#sweep(perSecond, burst, now);
      return { ok: true };
    }
    return { ok: false, retryAfterMs: perSecond > 0 ? Math.ceil(((1 - b.tokens) / perSecond) * 1000) : Infinity };
  }

  #refilled(key: string, perSecond: number, burst: number, now: number): Bucket {
    const b = this.#buckets.get(key);
    if (!b) return { tokens: burst, at: now };
    return { tokens: Math.min(burst, b.tokens + ((now - b.at) / 1000) * perSecond), at: now };
  }

  #sweep(perSecond: number, burst: number, now: number): void {
    for (const [key, b] of this.#buckets) {
      if (b.tokens + ((now - b.at) / 1000) * perSecond >= burst) this.#buckets.delete(key);
    }
  }
}
