// Every runtime driver Hangar has, listed explicitly (no self-registration).
import { createCrunDriver } from './crun-driver.ts';
import type { Driver } from './driver.ts';

export const DRIVER_NAMES = ['crun'] as const;
export type DriverName = (typeof DRIVER_NAMES)[number];

export type DriverOptions = {
  /** Directory for the runtime's own state, e.g. `<dataDir>/crun`. */
  stateRoot: string;
};

export function createDriver(name: DriverName, opts: DriverOptions): Driver {
  switch (name) {
    case 'crun':
      return createCrunDriver(opts);
  }
}
