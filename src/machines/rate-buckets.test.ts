import { it } from 'node:test';
import assert from 'node:assert/strict';
import { RateBuckets } from './rate-buckets.ts';

it('allows a burst, then one token per 1/rate seconds, and says when the next comes', () => {
  let now = 0;
  const b = new RateBuckets(() => now);
  for (let i = 0; i < 3; i++) assert.deepEqual(b.take('m', 1, 3), { ok: true });
  assert.deepEqual(b.take('m', 1, 3), { ok: false, retryAfterMs: 1000 });
  now = 400;
  assert.deepEqual(b.take('m', 1, 3), { ok: false, retryAfterMs: 600 });
  now = 1000;
  assert.deepEqual(b.take('m', 1, 3), { ok: true });
  assert.deepEqual(b.take('other', 1, 3), { ok: true }, 'keys have buckets of their own');
  now = 60_000;
  for (let i = 0; i < 3; i++) assert.deepEqual(b.take('m', 1, 3), { ok: true }, 'refills no further than the burst');
  assert.equal(b.take('m', 1, 3).ok, false);
  assert.equal(b.take('zero', 1, 0).ok, false, 'a burst of 0 allows nothing');
});
