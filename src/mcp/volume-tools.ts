import { z } from 'zod';
import { CreateVolumeRequestSchema, ExtendVolumeRequestSchema, type Volume } from '../protocol/volumes.ts';
import { appArg, CHANGES, DESTROYS, READ_ONLY, tool } from './tool-def.ts';

// Volumes: storage that outlives machines. A robot keeps its work (a database, a cache, a repo)
// on one and mounts it in whichever machine it runs next.

const volumeArg = z.string().min(1).meta({ description: 'Volume id (vol_…)' });

function line(v: Volume): string {
  return `${v.id} (${v.name}) ${v.size_gb} GB${v.attached_machine_id ? `, attached to ${v.attached_machine_id}` : ', not attached'}`;
}

export const volumeTools = [
  tool({
    name: 'volume_create',
    description:
      'Create a volume: storage of its own size (ENOSPC past it) that outlives machines. Mount it with machine_create config.mounts ' +
      '[{"volume": "<id>", "path": "/data"}]; one machine has it at a time, and destroying the machine keeps it. ' +
      'source_volume_id makes a copy of another volume (instant, even while it is in use), snapshot_id restores a snapshot.',
    input: {
      app: appArg,
      name: CreateVolumeRequestSchema.shape.name,
      size_gb: CreateVolumeRequestSchema.shape.size_gb,
      source_volume_id: CreateVolumeRequestSchema.shape.source_volume_id,
      snapshot_id: CreateVolumeRequestSchema.shape.snapshot_id,
    },
    annotations: CHANGES,
    run: async ({ app, name, size_gb, source_volume_id, snapshot_id }, { client, signal }) => {
      const v = await client.volumes.create(app, { name, ...(size_gb ? { size_gb } : {}), ...(source_volume_id ? { source_volume_id } : {}), ...(snapshot_id ? { snapshot_id } : {}) }, { signal });
      return { summary: `created volume ${line(v)}`, data: { volume: v } };
    },
  }),
  tool({
    name: 'volume_list',
    description: "List an app's volumes, with their sizes and the machine each is attached to.",
    input: { app: appArg },
    annotations: READ_ONLY,
    run: async ({ app }, { client, signal }) => {
      const volumes = await client.volumes.list(app, { signal });
      return { summary: volumes.length ? volumes.map(line).join('\n') : `no volumes in ${app}`, data: { volumes } };
    },
  }),
  tool({
    name: 'volume_extend',
    description: 'Grow a volume (never shrink). A machine using it keeps running and sees the new size at once.',
    input: { app: appArg, id: volumeArg, size_gb: ExtendVolumeRequestSchema.shape.size_gb },
    annotations: CHANGES,
    run: async ({ app, id, size_gb }, { client, signal }) => {
      const { volume } = await client.volumes.extend(app, id, size_gb, { signal });
      return { summary: `extended ${line(volume)}`, data: { volume } };
    },
  }),
  tool({
    name: 'volume_snapshot',
    description: 'Snapshot a volume as it is now (consistent even while a machine writes). volume_create with snapshot_id restores it into a new volume.',
    input: { app: appArg, id: volumeArg },
    annotations: CHANGES,
    run: async ({ app, id }, { client, signal }) => {
      const snapshot = await client.volumes.snapshots.create(app, id, { signal });
      return { summary: `snapshot ${snapshot.id} of ${id} (${snapshot.size} bytes)`, data: { snapshot } };
    },
  }),
  tool({
    name: 'volume_delete',
    description: 'Destroy a volume and its snapshots: its files are gone. Refused while a machine has it (destroy the machine first).',
    input: { app: appArg, id: volumeArg },
    annotations: DESTROYS,
    run: async ({ app, id }, { client, signal }) => {
      const v = await client.volumes.delete(app, id, { signal });
      return { summary: `destroyed volume ${v.id} (${v.name})`, data: { volume: v } };
    },
  }),
];
