import { randomUUID } from 'node:crypto';
import { HangarError } from '../protocol/errors.ts';
import { DEFAULT_APP_SETTINGS, type AppSettings } from '../protocol/app-settings.ts';
import type { MachineNetwork } from '../network/machine-network.ts';
import type { MachineService } from './machine-service.ts';
import type { VolumeService } from './volume-service.ts';
import type { AppRecord, Store } from './store.ts';

export class AppService {
  readonly #store: Store;
  readonly #machines: MachineService;
  readonly #network: MachineNetwork;
  readonly #volumes: VolumeService;

  constructor(store: Store, machines: MachineService, network: MachineNetwork, volumes: VolumeService) {
    this.#store = store;
    this.#machines = machines;
    this.#network = network;
    this.#volumes = volumes;
  }

  create(name: string, network?: string, settings: Partial<AppSettings> = {}): AppRecord {
    if (this.#store.getApp(name)) {
      throw new HangarError('app_exists', `app ${name} already exists`, { hint: 'use it, or choose another app_name' });
    }
    const app = {
      id: randomUUID(),
      name,
      network: network ?? 'default',
      createdAt: new Date().toISOString(),
      settings: { ...DEFAULT_APP_SETTINGS, ...settings },
    };
    this.#store.insertApp(app);
    return app;
  }

  get(name: string): AppRecord {
    const app = this.#store.getApp(name);
    if (!app) {
      throw new HangarError('app_not_found', `no app named ${name}`, {
        hint: `create it first: POST /v1/apps {"app_name": "${name}"}`,
        details: { app: name },
        next: [{ action: 'app_create', app: name }],
      });
    }
    return app;
  }

  settings(name: string): AppSettings {
    return this.get(name).settings;
  }

  /** Changes some settings; a new egress policy applies to the app's running machines at once. */
  async updateSettings(name: string, change: Partial<AppSettings>): Promise<AppRecord> {
    const app = this.#store.transaction(() => {
      const current = this.get(name);
      // Limits change field by field: raising one (as a quota_exceeded hint says) keeps the others.
      const limits = change.limits ? { ...current.settings.limits, ...change.limits } : current.settings.limits;
      const updated = { ...current, settings: { ...current.settings, ...change, limits } };
      this.#store.updateAppSettings(name, updated.settings);
      return updated;
    });
    const subnet = this.#store.subnetOfApp(name);
    if (change.egress && subnet !== undefined) await this.#network.refreshEgress(subnet);
    return app;
  }

  list(): Array<AppRecord & { machineCount: number }> {
    return this.#store.listApps().map((a) => ({ ...a, machineCount: this.#store.countLiveMachines(a.name) }));
  }

  machineCount(name: string): number {
    return this.#store.countLiveMachines(name);
  }

  /** Like Fly, deleting an app destroys its machines and volumes. */
  async delete(name: string): Promise<void> {
    this.get(name);
    for (const m of this.#machines.list(name)) await this.#machines.destroy(name, m.id, { force: true, leaseNonce: m.lease?.nonce });
    await this.#volumes.deleteAll(name);
    const subnet = this.#store.transaction(() => {
      this.#store.deleteApp(name);
      return this.#store.freeAppSubnet(name);
    });
    if (subnet !== undefined) await this.#network.removeApp(subnet);
  }
}
