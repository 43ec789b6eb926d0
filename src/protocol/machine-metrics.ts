import { z } from 'zod';

// A machine's resource use on the wire (a Hangar extension of the Machines API).

export const MachineMetricsSchema = z.object({
  machine_id: z.string(),
  app: z.string(),
  state: z.string(),
  at: z.string().meta({ description: 'When these figures were read (ISO 8601)' }),
  cpu: z.object({
    usage_seconds: z.number().meta({ description: 'CPU time of all its processes this run (user + system)' }),
    user_seconds: z.number(),
    system_seconds: z.number(),
    limit_cpus: z.number().optional().meta({ description: 'guest.cpus: how many cores it may use at once' }),
  }).nullable().meta({ description: 'null unless the machine runs' }),
  memory: z.object({
    current_bytes: z.number().meta({ description: 'Charged to it now, page cache and shared memory (/dev/shm) included' }),
    peak_bytes: z.number().optional().meta({ description: 'The most charged at once this run' }),
    limit_bytes: z.number().optional().meta({ description: 'Past this it is OOM-killed (guest.memory_mb)' }),
  }).nullable().meta({ description: 'null unless the machine runs' }),
  pids: z.object({
    current: z.number().meta({ description: 'Processes and threads' }),
    limit: z.number().optional(),
  }).nullable().meta({ description: 'null unless the machine runs' }),
  disk: z.object({
    used_bytes: z.number().meta({ description: 'Used on its own disk, as `df /` inside shows' }),
    size_bytes: z.number(),
  }).nullable().meta({ description: 'null for a machine without a disk of its own, or one not mounted' }),
  network: z.object({
    rx_bytes: z.number().meta({ description: 'Received by its eth0' }),
    tx_bytes: z.number().meta({ description: 'Sent from its eth0' }),
    rx_packets: z.number(),
    tx_packets: z.number(),
  }).nullable().meta({ description: 'Since its network was made (kept across stop/start); null without one' }),
});

export type MachineMetrics = z.infer<typeof MachineMetricsSchema>;
