import { HangarError } from '../protocol/errors.ts';
import type { LeaseRecord, MachineRecord } from './store.ts';
import { newNonce } from './ids.ts';

// Fly's machine leases: whoever holds the nonce has exclusive use of the machine's mutations.

export function activeLease(m: MachineRecord, now = Date.now()): LeaseRecord | null {
  return m.lease && m.lease.expiresAt * 1000 > now ? m.lease : null;
}

/** Throws machine_leased unless the machine is unleased or `nonce` is the lease's. */
export function assertLeaseHolder(m: MachineRecord, nonce: string | undefined): void {
  const lease = activeLease(m);
  if (!lease || lease.nonce === nonce) return;
  throw new HangarError('machine_leased', `machine ${m.id} is leased by ${lease.owner} until ${new Date(lease.expiresAt * 1000).toISOString()}`, {
    hint: 'send the lease nonce in the fly-machine-lease-nonce header, or wait for the lease to expire',
    details: { expires_at: lease.expiresAt, owner: lease.owner },
  });
}

export function grantLease(m: MachineRecord, opts: { ttlS: number; description: string; owner: string; nonce?: string }): LeaseRecord {
  const current = activeLease(m);
  if (current && current.nonce !== opts.nonce) assertLeaseHolder(m, opts.nonce);
  return {
    nonce: current?.nonce ?? newNonce(),
    expiresAt: Math.floor(Date.now() / 1000) + opts.ttlS,
    owner: opts.owner,
    description: opts.description,
    version: m.instanceId,
  };
}
