import { z } from 'zod';

// Committing a machine to an image (a Hangar extension of the Machines API).

export const CommitRequestSchema = z.object({
  image: z.string().min(1).max(512).meta({ description: 'Name for the new image, REGISTRY/REPO:TAG (e.g. 127.0.0.1:5000/team/app:v2); stored locally under it' }),
  push: z.boolean().optional().meta({ description: "Also push it to the name's registry, with the daemon's credentials for it; default false" }),
  checkpoint: z.string().min(1).optional().meta({ description: "Commit a checkpoint (id or name) instead of the machine's filesystem as it is now" }),
});

export type CommitRequest = z.infer<typeof CommitRequestSchema>;

export const SkippedEntrySchema = z.object({
  path: z.string(),
  type: z.enum(['socket', 'character-device', 'block-device', 'invalid-name']),
});

export const CommitResultSchema = z.object({
  image: z.string().meta({ description: 'Canonical name the image is stored (and pushed) under' }),
  digest: z.string().meta({ description: 'Manifest digest' }),
  layer: z.object({
    digest: z.string().meta({ description: 'The new layer blob (tar+gzip)' }),
    diff_id: z.string().meta({ description: 'sha256 of the uncompressed layer' }),
    size_bytes: z.number(),
    entries: z.number().meta({ description: 'Members in the layer, whiteouts included' }),
  }),
  layers: z.number().meta({ description: 'Layers in the image: the base image\'s plus the new one' }),
  size_bytes: z.number(),
  source: z.string().meta({ description: "'live', or the checkpoint id committed" }),
  pushed: z.boolean(),
  skipped: z.array(SkippedEntrySchema).meta({ description: 'Entries an image cannot carry (sockets, device nodes, names that are not UTF-8), left out' }),
});

export type CommitResult = z.infer<typeof CommitResultSchema>;
export type SkippedEntry = z.infer<typeof SkippedEntrySchema>;

/** Streamed as `{ "progress": … }` lines when the client accepts application/x-ndjson. */
export type CommitProgress =
  | { phase: 'capture'; source: string }
  | { phase: 'layer'; entries: number; bytes: number }
  | { phase: 'store'; digest: string }
  | { phase: 'push'; digest: string; doneBytes: number; totalBytes: number; blobs: number; blobIndex: number; skipped?: boolean }
  | { phase: 'manifest'; ref: string }
  | { phase: 'done'; image: string; digest: string };
