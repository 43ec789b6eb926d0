import { z } from 'zod';

// Checkpoints on the wire (a Hangar extension of the Machines API).

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
});

export const CheckpointParams = z.object({ app_name: z.string().min(1), machine_id: z.string().min(1), checkpoint_id: z.string().min(1) });

export type CreateCheckpointRequest = z.infer<typeof CreateCheckpointRequestSchema>;
export type Checkpoint = z.infer<typeof CheckpointSchema>;
