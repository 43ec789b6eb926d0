import { z } from 'zod';
import { parseDurationMs } from '../protocol/duration.ts';
import { LimitsSchema } from '../protocol/limits.ts';
import { TOKEN_ACTIONS, type Caveat } from '../protocol/token-format.ts';
import { appArg, CHANGES, tool } from './tool-def.ts';

// A robot handing work to something it runs (a machine, a sub-agent) gives it a token for one app
// rather than its own: minted from the token this MCP server serves with, so it can only be narrower.

export const tokenTools = [
  tool({
    name: 'token_create',
    description:
      'Mint a token limited to one app, narrowed from the token this server uses, to give to a program or machine doing part ' +
      "of the work: it can never do more than this server can. actions: any of read, write, exec, control, delete (default all); " +
      'machines: only these machine ids; commands: exec only these argv prefixes; ttl: how long it works ("1h"); from_machine: ' +
      'only usable from inside that machine (through http://_api.internal:4280); limits: how much it may hold and how fast it may ' +
      'ask (machines, running_machines, memory_mb, cpus, volumes, volume_gb, creates_per_minute, starts_per_second, start_burst), ' +
      'counted for it and every token narrowed from it together, on top of the app\'s limits. Send it as Authorization: Bearer <token>.',
    input: {
      app: appArg,
      actions: z.array(z.enum(TOKEN_ACTIONS)).optional(),
      machines: z.array(z.string().min(1)).optional(),
      commands: z.array(z.array(z.string()).min(1)).optional().meta({ description: 'Allowed exec argv prefixes, e.g. [["ls"], ["git", "status"]]' }),
      ttl: z.string().refine((t) => parseDurationMs(t) !== undefined, 'a duration such as "30m" or "2h"').optional().meta({ description: 'Lifetime, e.g. "30m" or "2h"' }),
      from_machine: z.string().min(1).optional(),
      limits: LimitsSchema.optional().meta({ description: 'Limits of the token and every token narrowed from it, together, e.g. {"running_machines": 2, "creates_per_minute": 10}' }),
    },
    annotations: CHANGES,
    run: async ({ app, actions, machines, commands, ttl, from_machine, limits }, { client, signal }) => {
      const caveats: Caveat[] = [{ type: 'apps', apps: { [app]: actions ?? [...TOKEN_ACTIONS] } }];
      if (machines) caveats.push({ type: 'machines', machines });
      if (commands) caveats.push({ type: 'commands', commands: commands.map((argv) => ({ argv, prefix: true })) });
      if (ttl !== undefined) caveats.push({ type: 'validity', not_after: Math.floor((Date.now() + parseDurationMs(ttl)!) / 1000) });
      if (from_machine) caveats.push({ type: 'from_machine', machine: from_machine });
      if (limits) caveats.push({ type: 'limits', limits });
      const minted = await client.tokens.create(caveats, { signal });
      return { summary: `minted a token for app ${app} (${caveats.map((c) => c.type).join(', ')})`, data: minted };
    },
  }),
];
