import { z } from 'zod';
import { CreateLeaseRequestSchema, LeaseSchema, MetadataValueSchema } from '../../protocol/schemas.ts';
import type { LeaseRecord } from '../../machines/store.ts';
import { route } from '../route.ts';
import { MachineParams, leaseNonceOf, OkSchema } from './params.ts';

// Fly's client reads a lease from `data`; Fly's published spec puts its fields at the top level.
// Answering with both keeps either kind of client working.
function wireLease(lease: LeaseRecord) {
  const data = { nonce: lease.nonce, expires_at: lease.expiresAt, owner: lease.owner, description: lease.description, version: lease.version };
  return { ...data, status: 'success', data };
}

const LeaseResponseSchema = LeaseSchema.extend({ status: z.string(), data: LeaseSchema });
const MetadataKeyParams = MachineParams.extend({ key: z.string().min(1).max(256) });

export const machineAdminRoutes = [
  route({
    access: { action: 'control' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/lease', tag: 'Leases',
    summary: 'Acquire (or, with fly-machine-lease-nonce, refresh) an exclusive lease',
    params: MachineParams, body: CreateLeaseRequestSchema, bodyOptional: true, response: LeaseResponseSchema,
    handler: ({ services, params, body, headers }) =>
      wireLease(services.admin.acquireLease(params.app_name, params.machine_id, {
        ttlS: body?.ttl ?? 30, description: body?.description ?? '', nonce: leaseNonceOf(headers),
      })),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/lease', tag: 'Leases', summary: 'Get the active lease',
    params: MachineParams, response: LeaseResponseSchema, observes: true,
    handler: ({ services, params }) => wireLease(services.admin.getLease(params.app_name, params.machine_id)),
  }),
  route({
    access: { action: 'control' },
    method: 'DELETE', path: '/v1/apps/{app_name}/machines/{machine_id}/lease', tag: 'Leases', summary: 'Release the lease (needs its nonce)',
    params: MachineParams, response: OkSchema,
    handler: ({ services, params, headers }) => {
      services.admin.releaseLease(params.app_name, params.machine_id, leaseNonceOf(headers));
      return { ok: true };
    },
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}/machines/{machine_id}/metadata', tag: 'Machines', summary: 'Get metadata',
    params: MachineParams, response: z.record(z.string(), z.string()), observes: true,
    handler: ({ services, params }) => services.admin.metadata(params.app_name, params.machine_id),
  }),
  route({
    access: { action: 'write' },
    method: 'POST', path: '/v1/apps/{app_name}/machines/{machine_id}/metadata/{key}', tag: 'Machines', summary: 'Set a metadata key',
    params: MetadataKeyParams, body: MetadataValueSchema, status: 204,
    handler: ({ services, params, body, headers }) => {
      services.admin.setMetadata(params.app_name, params.machine_id, params.key, body.value, leaseNonceOf(headers));
      return undefined;
    },
  }),
  route({
    access: { action: 'write' },
    method: 'DELETE', path: '/v1/apps/{app_name}/machines/{machine_id}/metadata/{key}', tag: 'Machines', summary: 'Delete a metadata key',
    params: MetadataKeyParams, status: 204,
    handler: ({ services, params, headers }) => {
      services.admin.setMetadata(params.app_name, params.machine_id, params.key, undefined, leaseNonceOf(headers));
      return undefined;
    },
  }),
  ...(['cordon', 'uncordon'] as const).map((verb) =>
    route({
      access: { action: 'control' },
      method: 'POST', path: `/v1/apps/{app_name}/machines/{machine_id}/${verb}`, tag: 'Machines',
      summary: verb === 'cordon' ? 'Take the machine out of proxy routing' : 'Put the machine back into proxy routing',
      params: MachineParams, response: OkSchema,
      handler: ({ services, params, headers }) => {
        services.admin.setCordoned(params.app_name, params.machine_id, verb === 'cordon', leaseNonceOf(headers));
        return { ok: true };
      },
    }),
  ),
];
