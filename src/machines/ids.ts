import { randomBytes } from 'node:crypto';

/** A machine id: 14 lowercase hex characters, like Fly's. */
export function newMachineId(): string {
  return randomBytes(7).toString('hex');
}

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** A 26-character ULID; Fly's instance_id (a machine version) has this shape. */
export function newInstanceId(now = Date.now()): string {
  let time = '';
  for (let t = now, i = 0; i < 10; i++, t = Math.floor(t / 32)) time = CROCKFORD[t % 32] + time;
  const rand = [...randomBytes(16)].map((b) => CROCKFORD[b % 32]).join('');
  return time + rand;
}

export function newNonce(): string {
  return randomBytes(16).toString('hex');
}
