import { z } from 'zod';
import {
  CreateMachineRequestSchema, ListMachinesQuerySchema, MachineEventSchema, MachineSchema, UpdateMachineRequestSchema, type Machine,
} from '../../protocol/schemas.ts';
import { appUrls } from '../../protocol/daemon-addresses.ts';
import { checkMachineRequestFields } from '../../protocol/machine-request-fields.ts';
import { toWireEvent, toWireMachine } from '../../machines/machine-view.ts';
import { route, type RouteContext } from '../route.ts';
import type { ApiServices } from '../services.ts';
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
  return answer(ctx.services, app, toWireMachine(m, ctx.services.machines.events(app, m.id), ctx.services.runner.diskUsage(m)));
}

/** A machine as create, update and get answer it: with its app's URLs when it serves, and the request's fields that have no effect. */
const MachineAnswerSchema = MachineSchema.extend({
  urls: z.array(z.string()).optional().meta({ description: "Hangar: where the machine's services are reached through the edge proxy" }),
  warnings: z.array(z.string()).optional().meta({ description: "Hangar: fields of Fly's config that were kept but are not implemented yet" }),
});

function answer(services: ApiServices, app: string, m: Machine, warnings: string[] = []): z.infer<typeof MachineAnswerSchema> {
  const serves = m.config.services?.some((s) => s.internal_port !== undefined);
  const urls = serves ? appUrls(services.addresses, app) : [];
  return { ...m, ...(urls.length ? { urls } : {}), ...(warnings.length ? { warnings } : {}) };
}

export const machineRoutes = [
  route({
    access: { action: 'read' },
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
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/machines', tag: 'Machines', summary: 'Create a machine (and start it unless skip_launch)',
    params: AppParams, body: CreateMachineRequestSchema, response: MachineAnswerSchema,
    handler: async (ctx) => {
      const { services, params, body, signal, caller } = ctx;
      const warnings = checkMachineRequestFields(body);
      services.apps.get(params.app_name);
      const m = await services.machines.create(params.app_name, body, { signal, caller });
      return answer(services, params.app_name, toWireMachine(m, services.machines.events(params.app_name, m.id), services.runner.diskUsage(m)), warnings);
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}', tag: 'Machines', summary: 'Get a machine',
    params: MachineParams, response: MachineAnswerSchema, observes: true,
    handler: (ctx) => wire(ctx, ctx.params.app_name, ctx.params.machine_id),
  }),
  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}', tag: 'Machines',
    summary: 'Update a machine: full config, new instance_id; a started machine restarts on it',
    params: MachineParams, body: UpdateMachineRequestSchema, response: MachineAnswerSchema,
    handler: async (ctx) => {
      const { services, params, body, headers, signal, caller } = ctx;
      const warnings = checkMachineRequestFields(body);
      const m = await services.machines.update(params.app_name, params.machine_id, body, { leaseNonce: leaseNonceOf(headers), signal, caller });
      return answer(services, params.app_name, toWireMachine(m, services.machines.events(params.app_name, m.id), services.runner.diskUsage(m)), warnings);
    },
  }),
  route({
    access: { action: 'delete' },
    method: 'DELETE', path: '/v1/apps/{app_name}/machines/{machine_id}', tag: 'Machines',
    summary: 'Destroy a machine (force=true kills a started one)',
    params: MachineParams, query: z.looseObject({ force: z.stringbool().default(false) }), response: OkSchema,
    handler: async ({ services, params, query, headers }) => {
      await services.machines.destroy(params.app_name, params.machine_id, { force: query.force, leaseNonce: leaseNonceOf(headers) });
      return { ok: true };
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/events', tag: 'Machines', summary: 'List machine events, newest first',
    params: MachineParams, response: z.array(MachineEventSchema), observes: true,
    handler: ({ services, params }) => services.machines.events(params.app_name, params.machine_id).map(toWireEvent),
  }),
];
