import { z } from 'zod';

// Usage by the second on the wire (a Hangar extension): what an app's machines held, and for how
// long, within a window. Recorded at each lifecycle transition, not sampled.

const figures = {
  seconds: z.record(z.string(), z.number()).meta({ description: 'Seconds in each state (started, stopped, created, starting, ...)' }),
  cpu_seconds: z.number().meta({
    description: "CPU time its processes used (user + system), from each run's cgroup as it is stopped; a run still going counts up to now. " +
      "A run that ended on its own (its main process exited) has its cgroup removed with it, so its CPU time is not counted",
  }),
  memory_mb_seconds: z.number().meta({ description: 'guest.memory_mb × seconds started' }),
  cpus_seconds: z.number().meta({ description: 'guest.cpus × seconds started (the cores reserved, used or not)' }),
  rootfs_gb_seconds: z.number().meta({ description: 'rootfs.size_gb × seconds the machine existed' }),
  checkpoint_gb_seconds: z.number().meta({ description: 'Checkpoints\' size in GB × seconds they existed' }),
  volume_gb_seconds: z.number().meta({ description: 'Volumes\' size_gb × seconds they existed (app totals only; a volume outlives machines)' }),
  egress_bytes: z.number().meta({ description: 'Bytes the machines sent from eth0 (to other machines, the gateway and beyond); runs still going count up to now' }),
};

export const UsageFiguresSchema = z.object(figures);
export type UsageFigures = z.infer<typeof UsageFiguresSchema>;

export const MachineUsageSchema = z.object({
  machine_id: z.string(),
  app: z.string(),
  from: z.string().meta({ description: 'Start of the window (ISO 8601)' }),
  to: z.string().meta({ description: 'End of the window (ISO 8601); now unless asked for earlier' }),
  ...figures,
});
export type MachineUsage = z.infer<typeof MachineUsageSchema>;

export const AppUsageSchema = z.object({
  app: z.string(),
  from: z.string(),
  to: z.string(),
  ...figures,
  machines: z.array(MachineUsageSchema.omit({ from: true, to: true, app: true })).meta({ description: 'Each machine that existed in the window, destroyed ones included' }),
});
export type AppUsage = z.infer<typeof AppUsageSchema>;

const Instant = z
  .string()
  .refine((s) => instantMs(s) !== undefined, 'an ISO 8601 time (2026-01-02T03:04:05Z) or Unix seconds')
  .meta({ description: 'An ISO 8601 time or Unix seconds' });

export const UsageQuerySchema = z.looseObject({
  from: Instant.optional().meta({ description: 'Start of the window; the beginning of records when absent' }),
  to: Instant.optional().meta({ description: 'End of the window; now when absent' }),
});

/** Milliseconds since the epoch of an ISO time or Unix seconds; undefined when it is neither. */
export function instantMs(text: string): number | undefined {
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? undefined : ms;
}
