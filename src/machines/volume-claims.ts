import { HangarError } from '../protocol/errors.ts';
import type { MachineMount } from '../protocol/machine-config.ts';
import type { Store } from './store.ts';
import type { VolumeRecord } from './volume-store.ts';

// Which machine has a volume. A volume is mounted by one machine at a time (Fly's
// attached_machine_id): claiming one another machine has is refused, and a machine keeps its
// volumes until it is destroyed or updated without them.

export function volumeNotFound(app: string, id: string): HangarError {
  return new HangarError('volume_not_found', `no volume ${id} in app ${app}`, {
    hint: `list the app's volumes: GET /v1/apps/${app}/volumes`,
    details: { volume_id: id, app },
  });
}

export function findVolume(store: Store, app: string, id: string): VolumeRecord {
  const v = store.volumes.get(id);
  if (!v || v.app !== app) throw volumeNotFound(app, id);
  return v;
}

/** Throws unless `machineId` may have every volume of `mounts` (each exists and no other machine has it). */
export function assertClaimable(store: Store, app: string, machineId: string | undefined, mounts: MachineMount[] | undefined): void {
  for (const mount of mounts ?? []) {
    const v = findVolume(store, app, mount.volume);
    if (v.attachedMachineId && v.attachedMachineId !== machineId) {
      throw new HangarError('volume_attached', `volume ${v.id} (${v.name}) is attached to machine ${v.attachedMachineId}`, {
        hint: `a volume is mounted by one machine at a time: destroy machine ${v.attachedMachineId} or update it without the volume, ` +
          `or mount a copy (POST /v1/apps/${app}/volumes {"name": "${v.name}", "source_volume_id": "${v.id}"})`,
        details: { volume_id: v.id, attached_machine_id: v.attachedMachineId },
      });
    }
  }
}

/**
 * Gives the machine the volumes of `mounts` and takes back those it had that are not there;
 * returns the ids taken back. Call inside a transaction (with the machine's insert or update).
 */
export function claimVolumes(store: Store, app: string, machineId: string, mounts: MachineMount[] | undefined): string[] {
  assertClaimable(store, app, machineId, mounts);
  const wanted = new Set((mounts ?? []).map((m) => m.volume));
  const released = store.volumes.attachedTo(machineId).filter((v) => !wanted.has(v.id)).map((v) => v.id);
  for (const id of released) store.volumes.setAttachment(id, null);
  for (const id of wanted) store.volumes.setAttachment(id, machineId);
  return released;
}

/** Takes back every volume of the machine; returns their ids. */
export function releaseVolumes(store: Store, machineId: string): string[] {
  return claimVolumes(store, '', machineId, []);
}
