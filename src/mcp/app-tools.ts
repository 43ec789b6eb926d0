import { AppNameSchema } from '../protocol/schemas.ts';
import { AutostopIdleSchema, EgressSchema, NestedNamespacesSchema } from '../protocol/app-settings.ts';
import { z } from 'zod';
import { appArg, CHANGES, DESTROYS, machineArg, READ_ONLY, tool } from './tool-def.ts';

const settingsArgs = {
  egress: EgressSchema.optional(),
  autostop_idle: AutostopIdleSchema.optional(),
  nested_namespaces: NestedNamespacesSchema.optional(),
};

export const appTools = [
  tool({
    name: 'app_list',
    description: 'List apps with their machine counts and settings. Start here to find which app a machine is in.',
    input: {},
    annotations: READ_ONLY,
    run: async (_args, { client, signal }) => {
      const { apps } = await client.apps.list({ signal });
      return { summary: `${apps.length} app(s): ${apps.map((a) => `${a.name} (${a.machine_count})`).join(', ') || 'none'}`, data: { apps } };
    },
  }),
  tool({
    name: 'app_create',
    description:
      'Create an app: a named group of machines sharing one private network. Every machine belongs to an app. ' +
      'Optionally set its egress (allow, deny, a list of networks, or a list of domain names such as *.github.com), autostop_idle, and nested_namespaces ' +
      '(let its machines make namespaces of their own, e.g. to run containers or sandboxes inside; default off).',
    input: { app: AppNameSchema.meta({ description: 'App name: lowercase letters, digits and dashes' }), ...settingsArgs },
    annotations: CHANGES,
    run: async ({ app, ...settings }, { client, signal }) => {
      const created = await client.apps.create(app, { signal, settings });
      return { summary: `created app ${created.name} (egress ${created.egress.policy})`, data: { app: created } };
    },
  }),
  tool({
    name: 'app_update',
    description:
      "Change an app's settings: egress (where its machines may send traffic; applies to running machines at once), " +
      'autostop_idle (how long an idle machine stays up before the proxy stops it), and nested_namespaces ' +
      "(let its machines make namespaces of their own; applies at each machine's next start or update).",
    input: { app: appArg, ...settingsArgs },
    annotations: CHANGES,
    run: async ({ app, ...settings }, { client, signal }) => {
      const updated = await client.apps.update(app, settings, { signal });
      return { summary: `updated app ${updated.name}: egress ${updated.egress.policy}, autostop_idle ${updated.autostop_idle}`, data: { app: updated } };
    },
  }),
  tool({
    name: 'app_usage',
    description:
      "An app's usage by the second, in total and per machine (or one machine's, with id): seconds in each state, CPU seconds used, " +
      'memory MB·s and CPUs·s held while started, rootfs/checkpoint/volume GB·s, egress bytes. Window: from/to as ISO 8601 or Unix ' +
      'seconds; by default everything up to now. Exact across daemon restarts.',
    input: {
      app: appArg,
      id: machineArg.optional(),
      from: z.string().optional().meta({ description: 'Start of the window (ISO 8601 or Unix seconds)' }),
      to: z.string().optional().meta({ description: 'End of the window (ISO 8601 or Unix seconds); now when absent' }),
    },
    annotations: READ_ONLY,
    run: async ({ app, id, from, to }, { client, signal }) => {
      const window = { signal, ...(from ? { from } : {}), ...(to ? { to } : {}) };
      const u = id ? await client.machines.usage(app, id, window) : await client.apps.usage(app, window);
      const who = id ? `machine ${id}` : `app ${app}`;
      return {
        summary: `${who}, ${u.from} to ${u.to}: ${u.seconds.started ?? 0} s started, ${u.cpu_seconds} CPU-s, ${u.memory_mb_seconds} MB·s, ${u.egress_bytes} bytes out`,
        data: { usage: u },
      };
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
