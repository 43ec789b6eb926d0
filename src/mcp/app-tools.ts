import { AppNameSchema } from '../protocol/schemas.ts';
import { appArg, CHANGES, DESTROYS, READ_ONLY, tool } from './tool-def.ts';

export const appTools = [
  tool({
    name: 'app_list',
    description: 'List apps with their machine counts. Start here to find which app a machine is in.',
    input: {},
    annotations: READ_ONLY,
    run: async (_args, { client, signal }) => {
      const { apps } = await client.apps.list({ signal });
      return { summary: `${apps.length} app(s): ${apps.map((a) => `${a.name} (${a.machine_count})`).join(', ') || 'none'}`, data: { apps } };
    },
  }),
  tool({
    name: 'app_create',
    description: 'Create an app: a named group of machines sharing one private network. Every machine belongs to an app.',
    input: { app: AppNameSchema.meta({ description: 'App name: lowercase letters, digits and dashes' }) },
    annotations: CHANGES,
    run: async ({ app }, { client, signal }) => {
      const created = await client.apps.create(app, { signal });
      return { summary: `created app ${created.name}`, data: { app: created } };
    },
  }),
  tool({
    name: 'app_destroy',
    description: 'Destroy an app and every machine in it, with their files. Cannot be undone.',
    input: { app: appArg },
    annotations: DESTROYS,
    run: async ({ app }, { client, signal }) => {
      await client.apps.delete(app, { signal });
      return { summary: `destroyed app ${app}`, data: { ok: true } };
    },
  }),
];
