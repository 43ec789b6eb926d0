import { z } from 'zod';
import { DurationSchema } from './duration.ts';
import { LifetimeSchema } from './lifetime.ts';

// Fly's MachineConfig. Fields Hangar acts on are validated strictly; the rest of Fly's fields
// (services, checks, dns...) are kept as given so a Fly client's config round-trips.

const SIGNALS = [
  'SIGABRT', 'SIGALRM', 'SIGFPE', 'SIGHUP', 'SIGILL', 'SIGINT', 'SIGKILL', 'SIGPIPE',
  'SIGQUIT', 'SIGSEGV', 'SIGTERM', 'SIGTRAP', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH',
] as const;
export const SignalSchema = z.enum(SIGNALS);
export type SignalName = z.infer<typeof SignalSchema>;

export const MachineInitSchema = z.looseObject({
  exec: z.array(z.string()).optional(),
  entrypoint: z.array(z.string()).optional(),
  cmd: z.array(z.string()).optional(),
  tty: z.boolean().optional(),
});

export const MachineGuestSchema = z.looseObject({
  cpus: z.int().min(1).max(64).optional(),
  memory_mb: z.int().min(16).optional(),
  cpu_kind: z.string().optional(),
});

export const MachineRestartSchema = z.looseObject({
  policy: z.enum(['no', 'always', 'on-failure']).optional(),
  max_retries: z.int().min(0).optional(),
});

export const MachineFileSchema = z.looseObject({
  guest_path: z.string().min(1).meta({ description: 'Absolute path inside the machine' }),
  raw_value: z.base64().optional().meta({ description: 'Base64 file contents' }),
  secret_name: z.string().optional(),
  mode: z.int().min(0).max(0o7777).optional(),
});

export const StopConfigSchema = z.looseObject({
  signal: SignalSchema.optional(),
  timeout: DurationSchema.optional(),
});

export const DEFAULT_ROOTFS_SIZE_GB = 8;
export const MAX_ROOTFS_SIZE_GB = 2048;

export const RootfsConfigSchema = z.object({
  persist: z.enum(['always', 'never']).optional().meta({
    description: 'always (default): files survive stop/start; never: the writable layer resets at each start',
  }),
  size_gb: z.int().min(1).max(MAX_ROOTFS_SIZE_GB).optional().meta({
    description:
      `Size of the machine's disk (what it writes on top of its image), in GB; default ${DEFAULT_ROOTFS_SIZE_GB}. ` +
      'Writing past it fails with ENOSPC in the machine. An update may grow it (online), never shrink it; left out, it keeps its size',
  }),
});

export const ServiceConcurrencySchema = z
  .looseObject({
    type: z.enum(['connections', 'requests']).optional().meta({ description: 'What counts as load; default connections' }),
    soft_limit: z.int().min(1).optional().meta({ description: 'Above this the proxy prefers other machines and may wake one; default 20' }),
    hard_limit: z.int().min(1).optional().meta({ description: 'At this the proxy queues briefly, then answers 503; default 25' }),
  })
  .refine((c) => c.soft_limit === undefined || c.hard_limit === undefined || c.soft_limit <= c.hard_limit, {
    message: 'soft_limit must not exceed hard_limit',
  });

export const MachineServiceSchema = z.looseObject({
  internal_port: z.int().min(1).max(65535).optional().meta({ description: 'The port the machine serves on; the edge proxy forwards to it' }),
  protocol: z.string().optional(),
  ports: z
    .array(
      z.looseObject({
        port: z.int().min(1).max(65535).optional(),
        handlers: z.array(z.string()).optional(),
        force_https: z.boolean().optional().meta({ description: 'Redirect plain-HTTP requests to the HTTPS listener (301)' }),
      }),
    )
    .optional(),
  autostart: z.boolean().optional().meta({ description: 'Start a stopped machine when a request needs it; default true' }),
  autostop: z
    .union([z.boolean(), z.enum(['off', 'stop', 'suspend'])])
    .optional()
    .meta({ description: 'Stop (or suspend) the machine once idle for the app\'s autostop_idle; true means stop; default off' }),
  min_machines_running: z.int().min(0).optional().meta({ description: 'Autostop never takes the app below this many started machines' }),
  concurrency: ServiceConcurrencySchema.optional(),
});

/** Where a machine may not mount a volume: its root, and what the runtime mounts itself. */
const RESERVED_MOUNT_PATHS = /^\/(?:proc|sys|dev|\.hangar)?(?:\/|$)/;

export const MachineMountSchema = z.looseObject({
  volume: z.string().min(1).meta({ description: 'Id of a volume of the app (vol_…); a volume is attached to one machine at a time' }),
  path: z
    .string()
    .regex(/^\/[^\0]*$/, 'an absolute path')
    .refine((p) => !p.split('/').includes('..') && !RESERVED_MOUNT_PATHS.test(p.replace(/\/+$/, '/')), 'not /, nor under /proc, /sys, /dev or /.hangar, nor with ..')
    .meta({ description: 'Where the volume appears in the machine' }),
  name: z.string().optional(),
});

export type MachineMount = z.infer<typeof MachineMountSchema>;

export const MachineConfigSchema = z.looseObject({
  image: z.string().min(1).meta({ description: 'OCI image reference, or hangar/busybox, hangar/debian:bookworm' }),
  env: z.record(z.string(), z.string()).optional(),
  init: MachineInitSchema.optional(),
  guest: MachineGuestSchema.optional(),
  restart: MachineRestartSchema.optional(),
  files: z.array(MachineFileSchema).optional(),
  metadata: z.record(z.string(), z.string()).optional(),
  stop_config: StopConfigSchema.optional(),
  rootfs: RootfsConfigSchema.optional(),
  auto_destroy: z.boolean().optional(),
  services: z.array(MachineServiceSchema).optional(),
  mounts: z
    .array(MachineMountSchema)
    .optional()
    .refine((ms) => !ms || (new Set(ms.map((m) => m.volume)).size === ms.length && new Set(ms.map((m) => m.path.replace(/\/+$/, ''))).size === ms.length), 'each volume and each path at most once')
    .meta({ description: 'Volumes to mount; each stays the machine\'s (attached) until the machine is destroyed or updated without it' }),
  lifetime: LifetimeSchema.optional(),
});

export type MachineConfig = z.infer<typeof MachineConfigSchema>;

/** Fly's memory per CPU when `guest.memory_mb` is not given: shared-cpu-1x is 256 MB, performance-1x 2 GB. */
const DEFAULT_MEMORY_MB_PER_CPU: Record<string, number> = { shared: 256, performance: 2048 };

/**
 * The config with Fly's default guest filled in where `guest` or some of its fields are missing
 * (`{cpu_kind: "shared", cpus: 1, memory_mb: 256}`), as Fly shows it in the machine's config.
 * A machine always has a memory limit: without one, a single machine could take the host's memory.
 */
export function withDefaultGuest(config: MachineConfig): MachineConfig {
  const cpuKind = config.guest?.cpu_kind ?? 'shared';
  const cpus = config.guest?.cpus ?? 1;
  const memoryMb = (DEFAULT_MEMORY_MB_PER_CPU[cpuKind] ?? DEFAULT_MEMORY_MB_PER_CPU.shared!) * cpus;
  return { ...config, guest: { ...config.guest, cpu_kind: cpuKind, cpus, memory_mb: config.guest?.memory_mb ?? memoryMb } };
}

/** The config with `rootfs.size_gb` filled in where it is missing. */
export function withRootfsSize(config: MachineConfig, sizeGb: number): MachineConfig {
  return { ...config, rootfs: { ...config.rootfs, size_gb: config.rootfs?.size_gb ?? sizeGb } };
}
