import { z } from 'zod';
import {
  CreateVolumeRequestSchema, ExtendVolumeRequestSchema, ExtendVolumeResponseSchema, UpdateVolumeRequestSchema, VolumeParams, VolumeSchema, VolumeSnapshotSchema,
  type Volume, type VolumeSnapshot,
} from '../../protocol/volumes.ts';
import type { VolumeService } from '../../machines/volume-service.ts';
import type { VolumeRecord, VolumeSnapshotRecord } from '../../machines/volume-store.ts';
import { route } from '../route.ts';
import { AppParams } from './params.ts';

// Fly's Volumes API: paths, bodies and answers as Fly has them.

function toWire(volumes: VolumeService, v: VolumeRecord, state = 'created'): Volume {
  const usage = state === 'created' ? volumes.usage(v) : undefined;
  return {
    id: v.id, name: v.name, state, size_gb: v.sizeGb, region: 'local', zone: 'local', encrypted: v.encrypted, fstype: v.fstype,
    created_at: v.createdAt, ...(v.attachedMachineId ? { attached_machine_id: v.attachedMachineId } : {}),
    ...(usage ? { block_size: usage.blockSize, blocks: usage.blocks, blocks_free: usage.blocksFree, blocks_avail: usage.blocksAvail } : {}),
    snapshot_retention: v.snapshotRetention, auto_backup_enabled: v.autoBackupEnabled, host_status: 'ok',
  };
}

function snapshotWire(s: VolumeSnapshotRecord, retentionDays: number): VolumeSnapshot {
  return { id: s.id, created_at: s.createdAt, digest: s.id, retention_days: retentionDays, size: s.sizeBytes, status: 'created', volume_size: s.sizeGb };
}

const update = (method: 'PUT' | 'POST') =>
  route({
    access: { action: 'write' },
    method, path: '/v1/apps/{app_name}/volumes/{volume_id}', tag: 'Volumes', summary: `Update a volume's settings (snapshot_retention, auto_backup_enabled)${method === 'POST' ? "; as PUT, the method Fly's spec names" : ''}`,
    params: VolumeParams, body: UpdateVolumeRequestSchema, response: VolumeSchema,
    handler: ({ services, params, body }) => toWire(services.volumes, services.volumes.update(params.app_name, params.volume_id, body)),
  });

export const volumeRoutes = [
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/volumes', tag: 'Volumes', summary: "List the app's volumes",
    params: AppParams, response: z.array(VolumeSchema),
    handler: ({ services, params }) => services.volumes.list(params.app_name).map((v) => toWire(services.volumes, v)),
  }),
  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/volumes', tag: 'Volumes',
    summary: 'Create a volume: empty, a copy of another (source_volume_id) or of a snapshot (snapshot_id). Mount it with config.mounts [{volume, path}]',
    params: AppParams, body: CreateVolumeRequestSchema, response: VolumeSchema,
    handler: async ({ services, params, body, caller }) => toWire(services.volumes, await services.volumes.create(params.app_name, body, caller)),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/volumes/{volume_id}', tag: 'Volumes', summary: 'Get a volume',
    params: VolumeParams, response: VolumeSchema,
    handler: ({ services, params }) => toWire(services.volumes, services.volumes.get(params.app_name, params.volume_id)),
  }),
  update('PUT'),
  update('POST'),
  route({
    access: { action: 'delete' },
    method: 'DELETE', path: '/v1/apps/{app_name}/volumes/{volume_id}', tag: 'Volumes',
    summary: 'Destroy a volume and its snapshots; refused while a machine has it',
    params: VolumeParams, response: VolumeSchema,
    handler: async ({ services, params }) => toWire(services.volumes, await services.volumes.delete(params.app_name, params.volume_id), 'destroyed'),
  }),
  route({
    access: { action: 'write' },
    method: 'PUT', path: '/v1/apps/{app_name}/volumes/{volume_id}/extend', tag: 'Volumes',
    summary: 'Grow a volume, never shrink it; a machine using it keeps running and sees the new size at once (needs_restart is false)',
    params: VolumeParams, body: ExtendVolumeRequestSchema, response: ExtendVolumeResponseSchema,
    handler: async ({ services, params, body, caller }) => ({
      needs_restart: false,
      volume: toWire(services.volumes, await services.volumes.extend(params.app_name, params.volume_id, body.size_gb, caller)),
    }),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/volumes/{volume_id}/snapshots', tag: 'Volumes', summary: "List the volume's snapshots, newest first",
    params: VolumeParams, response: z.array(VolumeSnapshotSchema),
    handler: ({ services, params }) => {
      const v = services.volumes.get(params.app_name, params.volume_id);
      return services.volumes.listSnapshots(params.app_name, v.id).map((s) => snapshotWire(s, v.snapshotRetention));
    },
  }),
  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/volumes/{volume_id}/snapshots', tag: 'Volumes',
    summary: 'Snapshot the volume, at one instant even while a machine writes to it; restore with POST …/volumes {"snapshot_id": …}',
    params: VolumeParams, response: VolumeSnapshotSchema,
    handler: async ({ services, params }) => {
      const s = await services.volumes.createSnapshot(params.app_name, params.volume_id);
      return snapshotWire(s, services.volumes.get(params.app_name, s.volumeId).snapshotRetention);
    },
  }),
];
