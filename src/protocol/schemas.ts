import { z } from 'zod';
import { MACHINE_STATES, WAITABLE_STATES } from './states.ts';
import { DurationSchema } from './duration.ts';
import { MachineConfigSchema, SignalSchema } from './machine-config.ts';
import { ERROR_CODES } from './errors.ts';
import { EVENT_SOURCES } from './event-sources.ts';
import { DEFAULT_MAX_OUTPUT_BYTES, MAX_MAX_OUTPUT_BYTES } from './output-cap.ts';
import { AppSettingsRequestSchema, AppSettingsWireSchema } from './app-settings.ts';
import { LimitsSchema } from './limits.ts';

// Wire types of the Machines API, shaped like Fly's. TypeScript types are inferred from these.

export const AppNameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lowercase letters, digits and dashes, starting with a letter or digit');

export const CreateAppRequestSchema = z.looseObject({
  app_name: AppNameSchema,
  org_slug: z.string().optional(),
  network: z.string().optional(),
  ...AppSettingsRequestSchema.shape,
});

/** PATCH /v1/apps/{app_name} (Hangar's own): the settings to change; the rest keep their value. */
export const UpdateAppRequestSchema = z.strictObject(AppSettingsRequestSchema.shape);

export const OrganizationSchema = z.object({ name: z.string(), slug: z.string() });

export const AppSchema = z.object({
  id: z.string(),
  name: z.string(),
  status: z.string(),
  organization: OrganizationSchema,
  machine_count: z.int(),
  created_at: z.string(),
  ...AppSettingsWireSchema.shape,
  effective_limits: LimitsSchema.required().meta({ description: "The limits the app runs under: its own (limits) over the daemon's defaults" }),
});

export const ListAppsResponseSchema = z.object({
  total_apps: z.int(),
  apps: z.array(z.object({ id: z.string(), name: z.string(), machine_count: z.int(), network: z.object({ name: z.string() }), ...AppSettingsWireSchema.shape })),
});

export const CreateMachineRequestSchema = z.looseObject({
  name: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/).optional(),
  config: MachineConfigSchema,
  skip_launch: z.boolean().optional(),
  lease_ttl: z.int().min(1).max(3600).optional(),
  region: z.string().optional(),
});

export const UpdateMachineRequestSchema = CreateMachineRequestSchema.extend({
  current_version: z.string().optional(),
});

export const ImageRefSchema = z.object({
  registry: z.string(),
  repository: z.string(),
  tag: z.string(),
  digest: z.string(),
  labels: z.record(z.string(), z.string()),
});

export const MachineEventSchema = z.object({
  id: z.string(),
  type: z.string(),
  status: z.string(),
  source: z.enum(EVENT_SOURCES).meta({ description: 'user (an API call), flyd (the machine itself), autostop (the edge proxy found it idle) or lifetime (a config.lifetime rule, named in request.rule)' }),
  timestamp: z.int(),
  request: z.record(z.string(), z.unknown()).optional(),
});

export const MachineSchema = z.object({
  id: z.string(),
  name: z.string(),
  state: z.enum(MACHINE_STATES),
  region: z.string(),
  instance_id: z.string(),
  private_ip: z.string(),
  config: MachineConfigSchema,
  image_ref: ImageRefSchema,
  events: z.array(MachineEventSchema),
  created_at: z.string(),
  updated_at: z.string(),
  host_status: z.enum(['ok', 'unknown', 'unreachable']),
  rootfs: z
    .object({
      size_gb: z.int(),
      size_bytes: z.number().optional().meta({ description: "The disk's capacity, as `df /` in the machine shows it" }),
      used_bytes: z.number().optional().meta({ description: 'What the machine has written on top of its image' }),
    })
    .optional()
    .meta({ description: "Hangar: the machine's disk (absent for machines made before machines had disks)" }),
  nonce: z.string().optional(),
});

export const StopRequestSchema = z.looseObject({
  signal: SignalSchema.optional(),
  timeout: DurationSchema.optional(),
});

export const SignalRequestSchema = z.looseObject({ signal: SignalSchema });

/** How much output a buffered exec answer keeps, stdout and stderr together. */
export function MaxOutputBytesSchema(defaultBytes: number) {
  return z.int().min(1024).max(MAX_MAX_OUTPUT_BYTES).optional().meta({
    description: `Most output bytes to answer with, stdout and stderr together; past it each keeps its head and tail and says how much it left out. Default ${defaultBytes}`,
  });
}

export const ExecRequestSchema = z.looseObject({
  command: z.array(z.string()).min(1).optional(),
  cmd: z.string().min(1).optional().meta({ description: 'Deprecated by Fly: a shell-split command string' }),
  timeout: z.int().min(1).max(3600).optional().meta({ description: 'Seconds; default 30' }),
  stdin: z.string().optional(),
  checkpoint: z.boolean().optional().meta({ description: 'Take a checkpoint of the machine first, and report its id (checkpoint_id) with the result, so the command can be rolled back' }),
  max_output_bytes: MaxOutputBytesSchema(DEFAULT_MAX_OUTPUT_BYTES),
});

/** Hangar: why a command ended early, when its machine was stopped under it. */
export const ExecStoppedSchema = z.object({
  by: z.enum(EVENT_SOURCES).meta({ description: 'Who stopped the machine: user, autostop, lifetime, or flyd (its main process exited)' }),
  action: z.string().meta({ description: 'stop, restart, update, destroy, restore, or exit' }),
  rule: z.string().optional().meta({ description: 'The lifetime rule, when one stopped it' }),
  message: z.string(),
  hint: z.string(),
}).meta({ description: 'Hangar: present when the machine was stopped while the command ran, which ended it; the command did not finish' });

const ExecStartedSchema = z.boolean().optional().meta({ description: 'Hangar: true when the machine was stopped and this call started it (autostart)' });

export const ExecResponseSchema = z.object({
  exit_code: z.int(),
  exit_signal: z.int().optional(),
  stdout: z.string(),
  stderr: z.string(),
  stdout_truncated_bytes: z.int().meta({ description: 'Bytes left out of the middle of stdout (over max_output_bytes); a marked line stands in for them' }),
  stderr_truncated_bytes: z.int().meta({ description: 'Bytes left out of the middle of stderr' }),
  timed_out: z.boolean(),
  checkpoint_id: z.string().optional().meta({ description: 'The checkpoint taken before the command, when asked for' }),
  started: ExecStartedSchema,
  stopped: ExecStoppedSchema.optional(),
});

export const EXEC_STREAM_DEFAULT_TIMEOUT_S = 300;

export const ExecStreamRequestSchema = z.object({
  command: z.array(z.string()).min(1).meta({ description: 'Program and arguments, e.g. ["sh", "-c", "apt-get install -y curl"]' }),
  timeout: z.int().min(1).max(86_400).optional()
    .meta({ description: `Seconds before the command is killed (the exit event then says timed_out); default ${EXEC_STREAM_DEFAULT_TIMEOUT_S}` }),
  stdin: z.string().optional().meta({ description: 'Text fed to the command on stdin, which is then closed' }),
  env: z.record(z.string().regex(/^[^=\0]+$/), z.string()).optional().meta({ description: "Variables added to (or replacing) the machine's env" }),
  cwd: z.string().startsWith('/').optional().meta({ description: "Working directory; default the machine's" }),
  checkpoint: z.boolean().optional().meta({ description: 'Take a checkpoint of the machine first, and report its id (checkpoint_id) with the result, so the command can be rolled back' }),
});

/** One line of the NDJSON stream of POST …/exec/stream (and one WebSocket message of …/exec/ws). */
export const ExecEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.enum(['stdout', 'stderr']), data: z.string() }),
  z.object({
    type: z.literal('exit'), exit_code: z.int(), exit_signal: z.int().optional(), timed_out: z.boolean(), cancelled: z.boolean(),
    checkpoint_id: z.string().optional(),
    started: ExecStartedSchema,
    stopped: ExecStoppedSchema.optional(),
  }),
]);

export const ProcessStatSchema = z.object({
  pid: z.int().meta({ description: "Pid as the machine sees it" }),
  command: z.string(),
  directory: z.string(),
  rss: z.int().meta({ description: 'Resident memory, bytes' }),
  cpu: z.int().meta({ description: "CPU use over the process's life, percent of one core" }),
  rtime: z.number().meta({ description: 'User CPU time, ms' }),
  stime: z.number().meta({ description: 'System CPU time, ms' }),
  listen_sockets: z.array(z.object({ proto: z.string(), address: z.string() })),
});

export const PsQuerySchema = z.object({
  sort_by: z.enum(['pid', 'cpu', 'rss', 'rtime', 'stime', 'command']).default('pid'),
  order: z.enum(['asc', 'desc']).default('asc'),
});

export const WaitQuerySchema = z.object({
  state: z.enum(WAITABLE_STATES).default('started'),
  timeout: z.coerce.number().int().min(1).max(300).default(60),
  instance_id: z.string().optional(),
});

export const CreateLeaseRequestSchema = z.looseObject({
  ttl: z.int().min(1).max(3600).optional(),
  description: z.string().optional(),
});

export const LeaseSchema = z.object({
  nonce: z.string(),
  expires_at: z.int(),
  owner: z.string(),
  description: z.string(),
  version: z.string(),
});

export const MetadataValueSchema = z.looseObject({ value: z.string() });

export const LogsQuerySchema = z.object({
  follow: z.stringbool().default(false),
  tail: z.coerce.number().int().min(0).max(100_000).default(1000),
});

export const ListMachinesQuerySchema = z.looseObject({
  include_deleted: z.stringbool().default(false),
  region: z.string().optional(),
});

export const ErrorBodySchema = z.object({
  error: z.string(),
  code: z.enum(ERROR_CODES),
  hint: z.string().optional(),
  request_id: z.string().optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});

export type CreateMachineRequest = z.infer<typeof CreateMachineRequestSchema>;
export type UpdateMachineRequest = z.infer<typeof UpdateMachineRequestSchema>;
export type Machine = z.infer<typeof MachineSchema>;
export type MachineEvent = z.infer<typeof MachineEventSchema>;
export type App = z.infer<typeof AppSchema>;
export type Lease = z.infer<typeof LeaseSchema>;
export type ExecRequest = z.infer<typeof ExecRequestSchema>;
export type ExecResponse = z.infer<typeof ExecResponseSchema>;
export type ExecStreamRequest = z.infer<typeof ExecStreamRequestSchema>;
export type ExecEvent = z.infer<typeof ExecEventSchema>;
export type ProcessStat = z.infer<typeof ProcessStatSchema>;
export type StopRequest = z.infer<typeof StopRequestSchema>;

// The files API (…/machines/{id}/files): paths are absolute, as the machine sees them.

export const GuestPathSchema = z.string().min(1).meta({ description: 'Absolute path inside the machine, e.g. /etc/app.conf' });

export const FilePathQuerySchema = z.object({ path: GuestPathSchema });

export const FileWriteQuerySchema = FilePathQuerySchema.extend({
  mode: z.string().regex(/^[0-7]{1,4}$/, 'octal digits such as 0644').optional()
    .meta({ description: 'Permission bits in octal; default 0644 for a new file, the old mode for a replaced one' }),
});

export const FileRemoveQuerySchema = FilePathQuerySchema.extend({
  recursive: z.stringbool().default(false).meta({ description: 'Remove a directory and everything in it' }),
});

export const FileRenameRequestSchema = z.object({
  from: GuestPathSchema,
  to: GuestPathSchema,
  overwrite: z.boolean().default(false).meta({ description: 'Replace an existing file (or empty directory) at `to`' }),
});

export const FileEntrySchema = z.object({
  name: z.string(),
  type: z.enum(['file', 'dir', 'symlink', 'other']),
  size: z.int().meta({ description: 'Bytes' }),
  mode: z.int().meta({ description: 'Permission bits (mode & 0o7777)' }),
  mtime: z.string().meta({ description: 'ISO 8601' }),
  link_target: z.string().optional().meta({ description: 'For a symlink: where it points, as stored' }),
});

export const FileStatSchema = FileEntrySchema.extend({ path: z.string() });

export const FileListSchema = z.object({ path: z.string(), entries: z.array(FileEntrySchema) });

export const FileWriteResponseSchema = z.object({ path: z.string(), size: z.int(), mode: z.int() });

export const TarUploadResponseSchema = z.object({ path: z.string(), members: z.int().meta({ description: 'Archive members unpacked' }) });

export type FileEntry = z.infer<typeof FileEntrySchema>;
export type FileStat = z.infer<typeof FileStatSchema>;
export type FileRenameRequest = z.infer<typeof FileRenameRequestSchema>;
