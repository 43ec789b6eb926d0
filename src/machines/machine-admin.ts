import { HangarError } from '../protocol/errors.ts';
import type { MachineService } from './machine-service.ts';
import { activeLease, assertLeaseHolder, grantLease } from './leases.ts';
import type { LeaseRecord, MachineRecord } from './store.ts';

// Leases, metadata and cordons: changes to a machine's record that do not touch its process.

export class MachineAdmin {
  readonly #machines: MachineService;

  constructor(machines: MachineService) {
    this.#machines = machines;
  }

  acquireLease(app: string, id: string, req: { ttlS: number; description: string; nonce?: string }): LeaseRecord {
    const m = this.#machines.get(app, id);
    m.lease = grantLease(m, { ttlS: req.ttlS, description: req.description, owner: 'api', nonce: req.nonce });
    this.#save(m);
    return m.lease;
  }

  getLease(app: string, id: string): LeaseRecord {
    const lease = activeLease(this.#machines.get(app, id));
    if (!lease) {
      throw new HangarError('lease_not_found', `machine ${id} has no active lease`, { hint: 'acquire one: POST …/lease' });
    }
    return lease;
  }

  releaseLease(app: string, id: string, nonce: string | undefined): void {
    const m = this.#machines.get(app, id);
    if (!activeLease(m)) throw new HangarError('lease_not_found', `machine ${id} has no active lease`, { hint: 'nothing to release' });
    assertLeaseHolder(m, nonce ?? '');
    m.lease = null;
    this.#save(m);
  }

  metadata(app: string, id: string): Record<string, string> {
    return this.#machines.get(app, id).config.metadata ?? {};
  }

  setMetadata(app: string, id: string, key: string, value: string | undefined, leaseNonce?: string): void {
    const m = this.#machines.get(app, id);
    assertLeaseHolder(m, leaseNonce);
    const metadata = { ...m.config.metadata };
    if (value === undefined) {
      if (!(key in metadata)) {
        throw new HangarError('validation_failed', `machine ${m.id} has no metadata key ${key}`, { hint: 'list keys: GET …/metadata' });
      }
      delete metadata[key];
    } else {
      metadata[key] = value;
    }
    m.config = { ...m.config, metadata };
    this.#save(m);
  }

  setCordoned(app: string, id: string, cordoned: boolean, leaseNonce?: string): void {
    const m = this.#machines.get(app, id);
    assertLeaseHolder(m, leaseNonce);
    m.cordoned = cordoned;
    this.#save(m);
  }

  #save(m: MachineRecord): void {
    m.updatedAt = new Date().toISOString();
    this.#machines.store.updateMachine(m);
  }
}
