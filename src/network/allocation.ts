import { HangarError } from '../protocol/errors.ts';
import type { Store } from '../machines/store.ts';
import { appSubnet, appSubnetCount, pickAddress, type MachineRange } from './addresses.ts';

/**
 * A private address for a new machine of `app`: the lowest free one of the app's subnet (the app
 * gets a subnet on its first machine). Call inside the transaction that inserts the machine, so
 * two creates cannot take one address.
 */
export function allocateAddress(store: Store, range: MachineRange, app: string): string {
  const index = store.claimAppSubnet(app, appSubnetCount(range));
  if (index === undefined) {
    throw new HangarError('network_exhausted', `every app subnet of the machine range is taken`, {
      hint: 'destroy apps you no longer need, or give the daemon a larger range with --machine-cidr',
    });
  }
  return pickAddress(appSubnet(range, index), store.usedAddresses(app));
}
