import { z } from 'zod';
import { AppSchema, CreateAppRequestSchema, ListAppsResponseSchema, UpdateAppRequestSchema } from '../../protocol/schemas.ts';
import { settingsChange, settingsToWire } from '../../protocol/app-settings.ts';
import type { AppRecord } from '../../machines/store.ts';
import type { Limits } from '../../protocol/limits.ts';
import { route } from '../route.ts';
import { AppParams } from './params.ts';

function toWireApp(app: AppRecord, machineCount: number, limits: Limits) {
  return {
    id: app.id,
    name: app.name,
    status: 'deployed',
    organization: { name: 'personal', slug: 'personal' },
    machine_count: machineCount,
    created_at: app.createdAt,
    ...settingsToWire(app.settings),
    effective_limits: limits,
  };
}

export const appRoutes = [
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps', tag: 'Apps', summary: "List apps (those the token's apps caveat names, for a narrowed token)",
    query: z.looseObject({ org_slug: z.string().optional() }),
    response: ListAppsResponseSchema,
    handler: ({ services, access }) => {
      const apps = services.apps.list().filter((a) => access.allowsApp(a.name));
      return {
        total_apps: apps.length,
        apps: apps.map((a) => ({ id: a.id, name: a.name, machine_count: a.machineCount, network: { name: a.network }, ...settingsToWire(a.settings) })),
      };
    },
  }),
  route({
    access: { action: 'write', appInBody: true },
    method: 'POST', path: '/v1/apps', tag: 'Apps', summary: 'Create an app (Hangar also takes its settings: egress, autostop_idle, nested_namespaces)', status: 201,
    body: CreateAppRequestSchema, response: AppSchema,
    handler: ({ services, body }) => toWireApp(services.apps.create(body.app_name, body.network, settingsChange(body)), 0, services.limits.limitsOf(body.app_name)),
  }),
  route({
    access: { action: 'read' },
    method: 'GET', path: '/v1/apps/{app_name}', tag: 'Apps', summary: 'Get an app',
    params: AppParams, response: AppSchema,
    handler: ({ services, params }) => toWireApp(services.apps.get(params.app_name), services.apps.machineCount(params.app_name), services.limits.limitsOf(params.app_name)),
  }),
  route({
    access: { action: 'write' },
    method: 'PATCH', path: '/v1/apps/{app_name}', tag: 'Apps',
    summary: "Change an app's settings (Hangar's own); a new egress policy applies to running machines at once, nested_namespaces at their next start",
    params: AppParams, body: UpdateAppRequestSchema, response: AppSchema,
    handler: async ({ services, params, body }) =>
      toWireApp(await services.apps.updateSettings(params.app_name, settingsChange(body)), services.apps.machineCount(params.app_name), services.limits.limitsOf(params.app_name)),
  }),
  route({
    access: { action: 'delete' },
    method: 'DELETE', path: '/v1/apps/{app_name}', tag: 'Apps', summary: 'Delete an app and destroy its machines', status: 202,
    params: AppParams,
    handler: async ({ services, params }) => {
      await services.apps.delete(params.app_name);
      return undefined;
    },
  }),
];
