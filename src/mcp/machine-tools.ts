import { z } from 'zod';
import { CreateMachineRequestSchema, StopRequestSchema, WaitQuerySchema, type Machine } from '../protocol/schemas.ts';
import { MachineConfigSchema } from '../protocol/machine-config.ts';
import { appUrlsText } from '../protocol/daemon-addresses.ts';
import { appArg, CHANGES, DESTROYS, machineArg, READ_ONLY, tool } from './tool-def.ts';
import { pullWithProgress, SENDS_PROGRESS } from './progress.ts';

// Machine lifecycle tools: one per Machines API verb, arguments named as the REST API names them.

function line(m: Machine): string {
  return `${m.id}${m.name ? ` (${m.name})` : ''} ${m.state}, image ${m.config.image}`;
}

/** A machine as create and update answer it: with its URLs when it serves, and warnings about fields with no effect. */
type MachineAnswer = Machine & { urls?: string[]; warnings?: string[] };

function answerLine(m: MachineAnswer): string {
  return [line(m), ...(m.urls?.length ? [`serving at ${m.urls.join(' and ')}`] : []), ...(m.warnings ?? []).map((w) => `warning: ${w}`)].join('\n');
}

function answerData({ urls, warnings, ...machine }: MachineAnswer): Record<string, unknown> {
  return { machine, ...(urls ? { urls } : {}), ...(warnings ? { warnings } : {}) };
}

export const machineTools = [
  tool({
    name: 'machine_create',
    description: (addresses) =>
      'Create a machine from an OCI image (hangar/busybox, hangar/debian:bookworm, or a registry image) and start it unless skip_launch. ' +
      'Give it a long-running init.cmd (e.g. ["sleep", "infinity"]) to exec into it. Its files survive stop and start. ' +
      `To serve HTTP, give config.services [{"internal_port": 8080, "autostop": "stop"}]: the app is then at ${appUrlsText(addresses)} ` +
      '(the answer lists its urls), a stopped machine wakes on the first request, and an idle one stops after the app\'s autostop_idle. ' +
      "Config fields Hangar does not know are refused (naming the nearest known one); Fly's fields it does not implement yet are listed in warnings. " +
      `The first use of an image pulls or builds it (a base image can take a minute), reported as progress. ${SENDS_PROGRESS}`,
    input: {
      app: appArg,
      config: MachineConfigSchema,
      name: CreateMachineRequestSchema.shape.name,
      skip_launch: CreateMachineRequestSchema.shape.skip_launch.meta({ description: 'Create it stopped (state created); write files, then machine_start' }),
    },
    annotations: CHANGES,
    run: async ({ app, config, name, skip_launch }, ctx) => {
      await pullWithProgress(config.image, ctx);
      const m: MachineAnswer = await ctx.client.machines.create(app, { config, ...(name ? { name } : {}), ...(skip_launch ? { skip_launch } : {}) }, { signal: ctx.signal });
      return { summary: `created ${answerLine(m)}`, data: answerData(m) };
    },
  }),
  tool({
    name: 'machine_list',
    description: "List an app's machines with their states and configs.",
    input: { app: appArg },
    annotations: READ_ONLY,
    run: async ({ app }, { client, signal }) => {
      const machines = await client.machines.list(app, { signal });
      return { summary: machines.length ? machines.map(line).join('\n') : `no machines in ${app}`, data: { machines } };
    },
  }),
  tool({
    name: 'machine_get',
    description: 'Get one machine: state, config, private IP, recent events.',
    input: { app: appArg, id: machineArg },
    annotations: READ_ONLY,
    run: async ({ app, id }, { client, signal }) => {
      const m = await client.machines.get(app, id, { signal });
      return { summary: line(m), data: { machine: m } };
    },
  }),
  tool({
    name: 'machine_start',
    description: 'Start a created or stopped machine (milliseconds; its files are as they were).',
    input: { app: appArg, id: machineArg },
    annotations: CHANGES,
    run: async ({ app, id }, { client, signal }) => {
      const r = await client.machines.start(app, id, { signal });
      return { summary: `started ${id} (was ${r.previous_state})`, data: r };
    },
  }),
  tool({
    name: 'machine_stop',
    description: 'Stop a started machine: its process gets signal (default SIGTERM), then SIGKILL after timeout. Every file is kept; a stopped machine uses no CPU or memory.',
    input: { app: appArg, id: machineArg, signal: StopRequestSchema.shape.signal, timeout: StopRequestSchema.shape.timeout },
    annotations: CHANGES,
    run: async ({ app, id, signal: sig, timeout }, { client, signal }) => {
      // The SDK types timeout as a string, but the API takes every duration form the schema allows.
      await client.machines.stop(app, id, { ...(sig ? { signal: sig } : {}), ...(timeout !== undefined ? { timeout: timeout as string } : {}) }, { signal });
      return { summary: `stopped ${id}`, data: { ok: true } };
    },
  }),
  tool({
    name: 'machine_restart',
    description: "Restart a machine's process (from started or stopped).",
    input: { app: appArg, id: machineArg },
    annotations: CHANGES,
    run: async ({ app, id }, { client, signal }) => {
      await client.machines.restart(app, id, { signal });
      return { summary: `restarted ${id}`, data: { ok: true } };
    },
  }),
  tool({
    name: 'machine_destroy',
    description: 'Destroy a machine and its files. A started machine needs force=true (or machine_stop first). Cannot be undone.',
    input: { app: appArg, id: machineArg, force: z.boolean().optional().meta({ description: 'Kill it if it is started' }) },
    annotations: DESTROYS,
    run: async ({ app, id, force }, { client, signal }) => {
      await client.machines.destroy(app, id, { signal, force });
      return { summary: `destroyed ${id}`, data: { ok: true } };
    },
  }),
  tool({
    name: 'machine_wait',
    description: `Wait until a machine reaches a state (e.g. stopped after its process exits). Fails with wait_timeout after timeout_s. ${SENDS_PROGRESS}`,
    input: {
      app: appArg,
      id: machineArg,
      state: WaitQuerySchema.shape.state,
      timeout_s: z.int().min(1).max(300).default(60).meta({ description: 'Seconds to wait, at most 300' }),
    },
    annotations: READ_ONLY,
    run: async ({ app, id, state, timeout_s }, { client, signal }) => {
      await client.machines.wait(app, id, state, { signal, timeoutS: timeout_s });
      return { summary: `${id} is ${state}`, data: { ok: true, state } };
    },
  }),
  tool({
    name: 'machine_update',
    description:
      'Replace a machine\'s whole config (read it with machine_get or the config resource, change what you need, send it all). ' +
      `A started machine restarts on the new config; files are kept. A new image is pulled first, reported as progress. ${SENDS_PROGRESS}`,
    input: { app: appArg, id: machineArg, config: MachineConfigSchema },
    annotations: CHANGES,
    run: async ({ app, id, config }, ctx) => {
      await pullWithProgress(config.image, ctx);
      const m: MachineAnswer = await ctx.client.machines.update(app, id, { config }, { signal: ctx.signal });
      return { summary: `updated ${answerLine(m)}`, data: answerData(m) };
    },
  }),
];
