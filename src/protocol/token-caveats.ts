import { z } from 'zod';
import { LimitsSchema } from './limits.ts';
import { TOKEN_ACTIONS, type Caveat } from './token-format.ts';

// The caveats a token may carry, as the daemon checks them. Strict: a caveat with a field the
// daemon does not know could mean a restriction it would not enforce, so such a token is refused.

const ActionSchema = z.enum(TOKEN_ACTIONS);
const UnixSeconds = z.int().min(0).meta({ description: 'Unix time in seconds' });

export const CaveatSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('apps'),
    apps: z.record(z.string().min(1), z.array(ActionSchema)).meta({ description: 'App name → the actions allowed on it (read, write, exec, control, delete)' }),
  }),
  z.strictObject({ type: z.literal('machines'), machines: z.array(z.string().min(1)).meta({ description: 'Machine ids; calls naming another machine are refused, calls naming none may only read' }) }),
  z.strictObject({
    type: z.literal('commands'),
    commands: z.array(z.strictObject({ argv: z.array(z.string()).min(1), prefix: z.boolean().optional() }))
      .meta({ description: 'Exec only these argv, exactly, or (prefix: true) followed by anything' }),
  }),
  z.strictObject({ type: z.literal('validity'), not_before: UnixSeconds.optional(), not_after: UnixSeconds.optional() }),
  z.strictObject({ type: z.literal('from_machine'), machine: z.string().min(1).meta({ description: "Machine id: only requests from its private address (its _api.internal)" }) }),
  z.strictObject({
    type: z.literal('limits'),
    limits: LimitsSchema.meta({
      description: 'Limits of this token and every token narrowed from it, together (one budget, counted over the machines and volumes ' +
        'they made and the runs they started, in every app), on top of the apps\' limits. Fields left out add no limit',
    }),
  }),
]) satisfies z.ZodType<Caveat>;

export const MAX_CAVEATS = 64;

export const CreateTokenRequestSchema = z.object({
  caveats: z.array(CaveatSchema).max(MAX_CAVEATS).default([]),
});

export const TokenResponseSchema = z.object({
  token: z.string(),
  id: z.string().meta({ description: "The token family's id: every token attenuated from one root shares it" }),
  caveats: z.array(CaveatSchema),
});

export const RevokeTokenRequestSchema = z.union([
  z.object({ token: z.string().min(1).meta({ description: 'Revokes this token and every token attenuated from it' }) }),
  z.object({ id: z.string().min(1).meta({ description: 'Revokes the whole family (admin token only)' }) }),
]);
