import { z } from 'zod';
import {
  CheckpointParams, CheckpointSchema, CreateCheckpointRequestSchema, DiffQuerySchema, DiffSchema, ForkRequestSchema, ForkResponseSchema, MachineDiffQuerySchema,
} from '../../protocol/checkpoints.ts';
import { MachineSchema } from '../../protocol/schemas.ts';
import type { CheckpointRecord } from '../../machines/store.ts';
import { toWireMachine } from '../../machines/machine-view.ts';
import { route } from '../route.ts';
import { MachineParams, leaseNonceOf, OkSchema } from './params.ts';

function toWire(c: CheckpointRecord): z.infer<typeof CheckpointSchema> {
  return { id: c.id, machine_id: c.machineId, name: c.name, comment: c.comment, created_at: c.createdAt, size_bytes: c.sizeBytes, parent_id: c.parentId, volumes: c.volumes };
}

export const checkpointRoutes = [
  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/checkpoints', tag: 'Checkpoints',
    summary: "Capture the machine's disk and volumes, stopped or started, at one instant (its processes keep running; writes wait for the instant of capture)",
    params: MachineParams, body: CreateCheckpointRequestSchema, bodyOptional: true, response: CheckpointSchema,
    handler: async ({ services, params, body }) => toWire(await services.checkpoints.create(params.app_name, params.machine_id, body ?? {})),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/checkpoints', tag: 'Checkpoints', summary: "List the machine's checkpoints, newest first",
    params: MachineParams, response: z.array(CheckpointSchema),
    handler: ({ services, params }) => services.checkpoints.list(params.app_name, params.machine_id).map(toWire),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/checkpoints/{checkpoint_id}', tag: 'Checkpoints', summary: 'Get a checkpoint (by id or name)',
    params: CheckpointParams, response: CheckpointSchema,
    handler: ({ services, params }) => toWire(services.checkpoints.get(params.app_name, params.machine_id, params.checkpoint_id)),
  }),
  route({
    access: { action: 'delete' },
    method: 'DELETE', path: '/v1/apps/{app_name}/machines/{machine_id}/checkpoints/{checkpoint_id}', tag: 'Checkpoints', summary: 'Delete a checkpoint; what no one else shares is freed',
    params: CheckpointParams, response: OkSchema,
    handler: async ({ services, params }) => {
      await services.checkpoints.delete(params.app_name, params.machine_id, params.checkpoint_id);
      return { ok: true };
    },
  }),
  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/checkpoints/{checkpoint_id}/restore', tag: 'Checkpoints',
    summary: "Roll the machine's disk back to the checkpoint, with the volumes it captured that the machine still has; a started machine restarts on it, a stopped one stays stopped. Later checkpoints are kept",
    params: CheckpointParams, response: MachineSchema,
    handler: async ({ services, params, headers }) => {
      const m = await services.checkpoints.restore(params.app_name, params.machine_id, params.checkpoint_id, { leaseNonce: leaseNonceOf(headers) });
      return toWireMachine(m, services.machines.events(params.app_name, m.id), services.runner.diskUsage(m));
    },
  }),

  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/fork', tag: 'Checkpoints',
    summary: "New machines (count, 1-16), each with its own copy-on-write copy of this machine's filesystem and volumes (new volumes, attached to it) as they are now or as a checkpoint holds them; started unless skip_launch",
    params: MachineParams, body: ForkRequestSchema, bodyOptional: true, response: ForkResponseSchema,
    handler: async ({ services, params, body, signal, caller }) => {
      // A fork is a create by the caller: its limits (and its token's) apply, rates included.
      const made = await services.checkpoints.fork(params.app_name, params.machine_id, body ?? {}, { signal, caller });
      return { machines: made.map((m) => toWireMachine(m, services.machines.events(params.app_name, m.id), services.runner.diskUsage(m))) };
    },
  }),

  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/checkpoints/{checkpoint_id}/diff', tag: 'Checkpoints',
    summary: 'What the checkpoint changed since the one before it (its parent; the image for the first): paths added, modified and deleted, with sizes',
    params: CheckpointParams, query: DiffQuerySchema, response: DiffSchema,
    handler: ({ services, params, query }) => {
      const c = services.checkpoints.get(params.app_name, params.machine_id, params.checkpoint_id);
      return services.checkpoints.diff(params.app_name, params.machine_id, { from: c.parentId, to: c.id }, diffOptions(query));
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/diff', tag: 'Checkpoints',
    summary: "What changed in the machine's filesystem: from a checkpoint (default: the image) to another or to now",
    params: MachineParams, query: MachineDiffQuerySchema, response: DiffSchema,
    handler: ({ services, params, query }) => services.checkpoints.diff(params.app_name, params.machine_id, { from: query.from ?? null, to: query.to }, diffOptions(query)),
  }),
];

function diffOptions(query: { content?: 'true' | 'false'; limit?: number }) {
  return { content: query.content === 'true', limit: query.limit ?? 1000 };
}
