import { z } from 'zod';
import { DurationSchema, durationToMs } from './duration.ts';

// A Hangar extension of the machine config: how long a machine may idle, run and lie stopped
// before Hangar stops or destroys it, so a robot's forgotten sandboxes clean themselves up.

const RuleSchema = (what: string) =>
  DurationSchema.refine((value) => {
    const ms = durationToMs(value);
    return ms !== undefined && ms >= 1000;
  }, 'a duration of 1s or more, such as "10m"').meta({ description: what });

export const LifetimeSchema = z
  .object({
    idle_stop: RuleSchema(
      'Stop the machine after this long with no activity: no proxy request or stream, API call on it, exec, console, file transfer or log follow',
    ).optional(),
    max_run: RuleSchema('Stop the machine this long after it started, busy or not').optional(),
    destroy_after_stopped: RuleSchema('Destroy the machine once it has been stopped this long').optional(),
  })
  .meta({ description: 'Hangar: when to stop or destroy the machine on its own; each stop or destroy event names the rule (source "lifetime")' });

export type Lifetime = z.infer<typeof LifetimeSchema>;
export type LifetimeRule = keyof Lifetime;
