import { z } from 'zod';

// Limits against runaway robots: how much an app may hold and how fast it may ask. An app's
// settings override the daemon's defaults (config.json `limits`) field by field.

const count = (what: string) => z.number().int().min(0).max(1_000_000).meta({ description: what });

export const LimitsSchema = z
  .object({
    machines: count('Machines the app may have (not destroyed)'),
    running_machines: count('Machines of the app running at once (starting or started)'),
    memory_mb: count('Sum of guest.memory_mb over the app\'s running machines'),
    cpus: count('Sum of guest.cpus over the app\'s running machines'),
    volumes: count('Volumes the app may have'),
    volume_gb: count('Sum of the sizes of the app\'s volumes, GB'),
    creates_per_minute: count('Machine creates per minute (a bucket of this size, refilled evenly over the minute)'),
    starts_per_second: z.number().positive().max(1000).meta({ description: 'Starts of one machine per second (API calls; restarts after a crash are not counted)' }),
    start_burst: count('Starts of one machine allowed at once before starts_per_second applies'),
  })
  .partial()
  .strict()
  .meta({ description: "Limits of the app; fields left out take the daemon's defaults (config.json `limits`). An update changes the fields it names" });

export type Limits = Required<z.infer<typeof LimitsSchema>>;
export type LimitsOverride = z.infer<typeof LimitsSchema>;

/**
 * Generous enough that no ordinary use meets them. The start rate is not Fly's 1/s (burst 3):
 * a stop/start cycle of a small machine here takes ~0.1 s and tests (and robots resetting a
 * machine) cycle it that fast; an app that wants Fly's sets it.
 */
export const DEFAULT_LIMITS: Limits = {
  machines: 1000,
  running_machines: 500,
  memory_mb: 4 * 1024 * 1024,
  cpus: 4096,
  volumes: 1000,
  volume_gb: 100_000,
  creates_per_minute: 600,
  starts_per_second: 20,
  start_burst: 20,
};

export function effectiveLimits(defaults: Limits, override: LimitsOverride | undefined): Limits {
  return { ...defaults, ...override };
}

/**
 * A token's limits caveat as the daemon applies it: `id` names the budget, the same for every
 * token narrowed from the one that carries the caveat (tokens/token-authority.ts derives it from
 * the chain's key at that caveat), so minting more tokens does not make more room.
 */
export type TokenBudget = { id: string; limits: LimitsOverride; caveatIndex: number };
