import type { DatabaseSync } from 'node:sqlite';

// Which machine holds a private address. Asked at every DNS lookup, connection event and request
// to the secret proxies, so answered from a map; the store drops the map whenever a machine is
// added or changes, as an address freed by a destroy goes to the next machine of the app at once.

export type AddressHolder = { app: string; machine: string };

export class AddressIndex {
  readonly #db: DatabaseSync;
  #byIp: Map<string, AddressHolder> | undefined;

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /** The machine (not destroyed) holding `ip`. */
  holder(ip: string): AddressHolder | undefined {
    this.#byIp ??= new Map(
      (this.#db.prepare("SELECT id, app, private_ip FROM machines WHERE state != 'destroyed' AND private_ip != ''").all() as Array<{ id: string; app: string; private_ip: string }>)
        .map((r) => [r.private_ip, { app: r.app, machine: r.id }]),
    );
    return this.#byIp.get(ip);
  }

  /** A machine was added or changed: the next question reads them again. */
  changed(): void {
    this.#byIp = undefined;
  }
}
