import { z } from 'zod';

// Volumes on the wire, shaped like Fly's (CreateVolumeRequest, Volume, VolumeSnapshot...): a Fly
// client works unchanged. Fields Fly has and Hangar does not act on (region, zone, compute,
// require_unique_zone...) are accepted and ignored.

export const DEFAULT_VOLUME_SIZE_GB = 1;
/** Fly's largest volume. */
export const MAX_VOLUME_SIZE_GB = 500;
export const DEFAULT_SNAPSHOT_RETENTION_DAYS = 5;

const SizeGb = z.int().min(1).max(MAX_VOLUME_SIZE_GB);

export const VolumeNameSchema = z.string().regex(/^[a-z0-9_]{1,30}$/, 'lowercase letters, digits and underscores, at most 30 (as Fly requires)');

export const CreateVolumeRequestSchema = z.looseObject({
  name: VolumeNameSchema,
  size_gb: SizeGb.optional().meta({ description: `Size in GB; default ${DEFAULT_VOLUME_SIZE_GB} (or the source's). Writing past it fails with ENOSPC` }),
  source_volume_id: z.string().min(1).optional().meta({ description: "Fork: the new volume starts as a copy of this one (copy-on-write; taken at one instant, even while its machine writes)" }),
  snapshot_id: z.string().min(1).optional().meta({ description: 'Restore: the new volume starts as this snapshot' }),
  snapshot_retention: z.int().min(1).max(60).optional(),
  auto_backup_enabled: z.boolean().optional(),
  region: z.string().optional(),
  encrypted: z.boolean().optional(),
  fstype: z.string().optional().meta({ description: 'Ignored: volumes are XFS, which grows while its machine runs' }),
}).refine((r) => !(r.source_volume_id && r.snapshot_id), { message: 'give source_volume_id or snapshot_id, not both' });

export const UpdateVolumeRequestSchema = z.looseObject({
  snapshot_retention: z.int().min(1).max(60).optional(),
  auto_backup_enabled: z.boolean().optional(),
});

export const ExtendVolumeRequestSchema = z.looseObject({
  size_gb: SizeGb.meta({ description: 'The new size in GB; never smaller. A machine using the volume keeps running and sees it at once' }),
});

export const VolumeSchema = z.object({
  id: z.string(),
  name: z.string(),
  state: z.string().meta({ description: 'created, or destroyed in the answer to a delete' }),
  size_gb: z.int(),
  region: z.string(),
  zone: z.string(),
  encrypted: z.boolean(),
  fstype: z.string(),
  created_at: z.string(),
  // Absent, not null, when no machine has it: Fly's spec types both as strings.
  attached_machine_id: z.string().optional().meta({ description: 'The machine that has it mounted; absent when none' }),
  block_size: z.int().optional().meta({ description: 'These four as `df` shows them; absent while no machine has the volume' }),
  blocks: z.int().optional(),
  blocks_free: z.int().optional(),
  blocks_avail: z.int().optional(),
  snapshot_retention: z.int(),
  auto_backup_enabled: z.boolean(),
  host_status: z.enum(['ok', 'unknown', 'unreachable']),
});

export const ExtendVolumeResponseSchema = z.object({
  needs_restart: z.boolean().meta({ description: 'Always false: volumes grow online' }),
  volume: VolumeSchema,
});

export const VolumeSnapshotSchema = z.object({
  id: z.string(),
  created_at: z.string(),
  digest: z.string(),
  retention_days: z.int(),
  size: z.number().meta({ description: 'Bytes the volume held when captured' }),
  status: z.string(),
  volume_size: z.int().meta({ description: 'Hangar: the size in GB of the volume captured; a volume restored from it is at least as large' }),
});

export const VolumeParams = z.object({ app_name: z.string().min(1), volume_id: z.string().min(1) });

export type CreateVolumeRequest = z.infer<typeof CreateVolumeRequestSchema>;
export type UpdateVolumeRequest = z.infer<typeof UpdateVolumeRequestSchema>;
export type Volume = z.infer<typeof VolumeSchema>;
export type VolumeSnapshot = z.infer<typeof VolumeSnapshotSchema>;
export type ExtendVolumeResponse = z.infer<typeof ExtendVolumeResponseSchema>;
