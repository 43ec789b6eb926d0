import { z } from 'zod';
import { CreateCheckpointRequestSchema, ForkRequestSchema, type Checkpoint } from '../protocol/checkpoints.ts';
import { CommitRequestSchema } from '../protocol/commit.ts';
import { appArg, CHANGES, DESTROYS, machineArg, READ_ONLY, tool } from './tool-def.ts';
import { SENDS_PROGRESS } from './progress.ts';

// Checkpoints: a robot captures a machine before a risky step and rolls back when it goes wrong.

const checkpointArg = z.string().min(1).meta({ description: 'Checkpoint id or name' });

function line(c: Checkpoint): string {
  return `${c.id}${c.name !== c.id ? ` (${c.name})` : ''} ${c.created_at}, ${c.size_bytes} bytes written${c.comment ? ` — ${c.comment}` : ''}`;
}

export const checkpointTools = [
  tool({
    name: 'checkpoint_create',
    description:
      "Capture a machine's whole filesystem, stopped or started (its processes keep running), in milliseconds whatever it holds. " +
      `Take one before a risky step (an upgrade, a migration, a big refactor); checkpoint_restore rolls back to it. ${SENDS_PROGRESS}`,
    input: { app: appArg, id: machineArg, name: CreateCheckpointRequestSchema.shape.name, comment: CreateCheckpointRequestSchema.shape.comment },
    annotations: CHANGES,
    run: async ({ app, id, name, comment }, { client, signal }) => {
      const c = await client.checkpoints.create(app, id, { ...(name ? { name } : {}), ...(comment ? { comment } : {}) }, { signal });
      return { summary: `checkpoint ${line(c)}`, data: { checkpoint: c } };
    },
  }),
  tool({
    name: 'checkpoint_list',
    description: "List a machine's checkpoints, newest first.",
    input: { app: appArg, id: machineArg },
    annotations: READ_ONLY,
    run: async ({ app, id }, { client, signal }) => {
      const checkpoints = await client.checkpoints.list(app, id, { signal });
      return { summary: checkpoints.length ? checkpoints.map(line).join('\n') : `machine ${id} has no checkpoints`, data: { checkpoints } };
    },
  }),
  tool({
    name: 'checkpoint_restore',
    description:
      "Roll a machine's filesystem back to a checkpoint: everything written since is gone. A started machine restarts on it; a stopped one stays stopped. " +
      `The checkpoint and later ones are kept, so a restore can itself be undone. ${SENDS_PROGRESS}`,
    input: { app: appArg, id: machineArg, checkpoint: checkpointArg },
    annotations: DESTROYS,
    run: async ({ app, id, checkpoint }, { client, signal }) => {
      const m = await client.checkpoints.restore(app, id, checkpoint, { signal });
      return { summary: `${id} restored to ${checkpoint}; it is ${m.state}`, data: { machine: m } };
    },
  }),
  tool({
    name: 'checkpoint_delete',
    description: 'Delete a checkpoint; its space is freed where nothing else shares it.',
    input: { app: appArg, id: machineArg, checkpoint: checkpointArg },
    annotations: DESTROYS,
    run: async ({ app, id, checkpoint }, { client, signal }) => {
      await client.checkpoints.delete(app, id, checkpoint, { signal });
      return { summary: `deleted checkpoint ${checkpoint} of ${id}`, data: { ok: true } };
    },
  }),

  tool({
    name: 'machine_fork',
    description:
      "Make new machines (count 1-16), each with its own copy of a machine's filesystem as it is now or as a checkpoint holds it, " +
      `started unless skip_launch. Try several approaches side by side, then keep the one that worked and destroy the others. ${SENDS_PROGRESS}`,
    input: { app: appArg, id: machineArg, checkpoint: ForkRequestSchema.shape.checkpoint, count: ForkRequestSchema.shape.count, name: ForkRequestSchema.shape.name, skip_launch: ForkRequestSchema.shape.skip_launch },
    annotations: CHANGES,
    run: async ({ app, id, checkpoint, count, name, skip_launch }, { client, signal }) => {
      const { machines } = await client.machines.fork(app, id, { ...(checkpoint ? { checkpoint } : {}), ...(count ? { count } : {}), ...(name ? { name } : {}), ...(skip_launch ? { skip_launch } : {}) }, { signal });
      return { summary: `forked ${id} into ${machines.map((m) => `${m.id} (${m.state})`).join(', ')}`, data: { machines } };
    },
  }),

  tool({
    name: 'machine_commit',
    description:
      "Make an OCI image of a machine: its image plus everything it wrote (now, captured while it keeps running, or as a checkpoint holds it), " +
      "with its command and env. Stored on this host as `image` (REGISTRY/REPO:TAG); push: true also pushes it to that registry. " +
      'Create machines from it (here or on another host) to start from the state this one reached.',
    input: { app: appArg, id: machineArg, image: CommitRequestSchema.shape.image, push: CommitRequestSchema.shape.push, checkpoint: CommitRequestSchema.shape.checkpoint },
    annotations: { ...CHANGES, openWorldHint: true },
    run: async ({ app, id, image, push, checkpoint }, { client, signal, progress }) => {
      let phase = '';
      const made = await client.machines.commit(app, id, { image, ...(push ? { push } : {}), ...(checkpoint ? { checkpoint } : {}) }, {
        signal,
        onProgress: (p) => {
          if (p.phase === phase) return;
          phase = p.phase;
          void progress(`commit: ${p.phase}`);
        },
      });
      const skipped = made.skipped.length ? `; left out ${made.skipped.map((s) => `${s.path} (${s.type})`).join(', ')}` : '';
      return { summary: `${id} committed as ${made.image} ${made.digest} (${made.layers} layers${made.pushed ? ', pushed' : ''})${skipped}`, data: made };
    },
  }),

  tool({
    name: 'machine_diff',
    description:
      "What changed in a machine's filesystem: paths added, modified and deleted, with sizes. From a checkpoint (default: the image it was created from) " +
      "to another checkpoint or to now (default). content: true adds unified diffs of small text files. Review a step's changes before keeping them.",
    input: {
      app: appArg, id: machineArg,
      from: checkpointArg.optional().meta({ description: 'Checkpoint id or name to compare from; default: the image' }),
      to: checkpointArg.optional().meta({ description: "Checkpoint id or name to compare to; default: the machine now ('live')" }),
      content: z.boolean().optional().meta({ description: 'Add unified diffs of modified text files (up to 64 KiB each)' }),
      limit: z.int().min(1).max(10_000).optional().meta({ description: 'Most changes to list; default 200' }),
    },
    annotations: READ_ONLY,
    run: async ({ app, id, from, to, content, limit }, { client, signal }) => {
      const diff = await client.checkpoints.diffMachine(app, id, { signal, ...(from ? { from } : {}), ...(to ? { to } : {}), ...(content ? { content } : {}), limit: limit ?? 200 });
      const lines = diff.changes.map((c) => `${c.change === 'added' ? '+' : c.change === 'deleted' ? '-' : '~'} ${c.path}${c.type === 'directory' ? '/' : ''}${c.size !== undefined ? ` (${c.size} bytes)` : ''}`);
      const head = `${diff.changes.length} changes from ${diff.from ?? 'the image'} to ${diff.to}${diff.truncated ? ' (truncated: narrow the range or raise limit)' : ''}`;
      return { summary: [head, ...lines, ...diff.changes.flatMap((c) => (c.diff ? [c.diff] : []))].join('\n'), data: diff };
    },
  }),
];
