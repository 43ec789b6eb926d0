import { z } from 'zod';
import { MachineConfigSchema } from './machine-config.ts';
import { MachineSchema } from './schemas.ts';

// Checkpoints and forks on the wire (a Hangar extension of the Machines API).

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export const CreateCheckpointRequestSchema = z.object({
  name: z.string().regex(NAME, 'letters, digits, ".", "_" and "-", at most 63, starting with a letter or digit').optional()
    .meta({ description: 'Unique among the machine\'s checkpoints; usable in place of the id. Default: the id' }),
  comment: z.string().max(1024).optional().meta({ description: 'What the robot was about to try, for whoever rolls back' }),
});

export const CheckpointSchema = z.object({
  id: z.string(),
  machine_id: z.string(),
  name: z.string(),
  comment: z.string(),
  created_at: z.string(),
  size_bytes: z.number().meta({ description: 'What the machine had written on top of its image when captured' }),
  parent_id: z.string().nullable().meta({ description: 'The checkpoint the disk last came from or was captured as' }),
  volumes: z.array(z.string()).meta({ description: 'The volumes captured with the disk (those the machine had mounted); a restore rolls back those it still has' }),
});

export const CheckpointParams = z.object({ app_name: z.string().min(1), machine_id: z.string().min(1), checkpoint_id: z.string().min(1) });

export type CreateCheckpointRequest = z.infer<typeof CreateCheckpointRequestSchema>;
export type Checkpoint = z.infer<typeof CheckpointSchema>;

export const MAX_FORKS = 16;

export const ForkRequestSchema = z.object({
  checkpoint: z.string().min(1).optional().meta({ description: "A checkpoint (id or name) to fork from; default: the machine's filesystem as it is now" }),
  count: z.int().min(1).max(MAX_FORKS).optional().meta({ description: `How many machines to make, 1 to ${MAX_FORKS}; default 1` }),
  name: z.string().min(1).max(63).optional().meta({ description: 'Name of the new machine; with count > 1, NAME-1, NAME-2, …' }),
  config: MachineConfigSchema.optional().meta({ description: "The new machines' config; default: the source's" }),
  skip_launch: z.boolean().optional().meta({ description: 'Leave the new machines created, not started' }),
});

export const ForkResponseSchema = z.object({ machines: z.array(MachineSchema) });

export type ForkRequest = z.infer<typeof ForkRequestSchema>;

export const MAX_DIFF_CHANGES = 100_000;

export const DiffQuerySchema = z.object({
  content: z.enum(['true', 'false']).optional().meta({ description: 'true: unified diffs of modified text files up to 64 KiB' }),
  limit: z.coerce.number().int().min(1).max(MAX_DIFF_CHANGES).optional().meta({ description: 'Most changes to list; default 1000' }),
});

export const MachineDiffQuerySchema = DiffQuerySchema.extend({
  from: z.string().min(1).optional().meta({ description: 'A checkpoint (id or name); default: the image as the machine was created from it' }),
  to: z.string().min(1).optional().meta({ description: "A checkpoint, or 'live' (the default): the machine's filesystem now" }),
});

export const ChangeSchema = z.object({
  path: z.string(),
  change: z.enum(['added', 'modified', 'deleted']),
  type: z.enum(['file', 'directory', 'symlink', 'other']),
  size: z.number().optional(),
  previous_size: z.number().optional(),
  diff: z.string().optional(),
});

export const DiffSchema = z.object({
  from: z.string().nullable().meta({ description: 'The checkpoint compared from; null: the image' }),
  to: z.string().meta({ description: "The checkpoint compared to, or 'live'" }),
  changes: z.array(ChangeSchema).meta({ description: 'Sorted by path; a deleted directory is one entry' }),
  truncated: z.boolean().meta({ description: 'More changes than limit (or deeper than 256 levels); narrow the range or raise limit' }),
});

export type Diff = z.infer<typeof DiffSchema>;
