import { z } from 'zod';
import {
  CreateMachineRequestSchema, ListMachinesQuerySchema, MachineEventSchema, MachineSchema, UpdateMachineRequestSchema,
} from '../../protocol/schemas.ts';
import { toWireEvent, toWireMachine } from '../../machines/machine-view.ts';
import { route, type RouteContext } from '../route.ts';
import { AppParams, MachineParams, leaseNonceOf, OkSchema } from './params.ts';

/** `metadata.role=web` query parameters, as Fly's list accepts them. */
function metadataFilter(query: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(query)
      .filter(([k, v]) => k.startsWith('metadata.') && typeof v === 'string')
      .map(([k, v]) => [k.slice('metadata.'.length), v as string]),
  );
}

function wire(ctx: RouteContext<unknown, unknown, unknown>, app: string, id: string) {
  const m = ctx.services.machines.get(app, id, { includeDestroyed: true });
  return toWireMachine(m, ctx.services.machines.events(app, m.id), ctx.services.runner.diskUsage(m));
}

export const machineRoutes = [
  route({
    method: 'GET', path: '/v1/apps/{app_name}/machines', tag: 'Machines', summary: 'List machines (filter with metadata.KEY=VALUE)',
    params: AppParams, query: ListMachinesQuerySchema, response: z.array(MachineSchema),
    handler: (ctx) => {
      const { services, params, query } = ctx;
      services.apps.get(params.app_name);
      return services.machines
        .list(params.app_name, { includeDestroyed: query.include_deleted, metadata: metadataFilter(query) })
        .map((m) => toWireMachine(m, services.machines.events(params.app_name, m.id), services.runner.diskUsage(m)));
    },
  }),
  route({
    method: 'POST', path: '/v1/apps/{app_name}/machines', tag: 'Machines', summary: 'Create a machine (and start it unless skip_launch)',
    params: AppParams, body: CreateMachineRequestSchema, response: MachineSchema,
    handler: async (ctx) => {
      const { services, params, body, signal } = ctx;
      services.apps.get(params.app_name);
      const m = await services.machines.create(params.app_name, body, { signal });
      return toWireMachine(m, services.machines.events(params.app_name, m.id), services.runner.diskUsage(m));
    },
  }),
  route({
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}', tag: 'Machines', summary: 'Get a machine',
    params: MachineParams, response: MachineSchema, observes: true,
    handler: (ctx) => wire(ctx, ctx.params.app_name, ctx.params.machine_id),
  }),
  route({
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}', tag: 'Machines',
    summary: 'Update a machine: full config, new instance_id; a started machine restarts on it',
    params: MachineParams, body: UpdateMachineRequestSchema, response: MachineSchema,
    handler: async (ctx) => {
      const { services, params, body, headers, signal } = ctx;
      const m = await services.machines.update(params.app_name, params.machine_id, body, { leaseNonce: leaseNonceOf(headers), signal });
      return toWireMachine(m, services.machines.events(params.app_name, m.id), services.runner.diskUsage(m));
    },
  }),
  route({
    method: 'DELETE', path: '/v1/apps/{app_name}/machines/{machine_id}', tag: 'Machines',
    summary: 'Destroy a machine (force=true kills a started one)',
    params: MachineParams, query: z.looseObject({ force: z.stringbool().default(false) }), response: OkSchema,
    handler: async ({ services, params, query, headers }) => {
      await services.machines.destroy(params.app_name, params.machine_id, { force: query.force, leaseNonce: leaseNonceOf(headers) });
      return { ok: true };
    },
  }),
  route({
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/events', tag: 'Machines', summary: 'List machine events, newest first',
    params: MachineParams, response: z.array(MachineEventSchema), observes: true,
    handler: ({ services, params }) => services.machines.events(params.app_name, params.machine_id).map(toWireEvent),
  }),
];
