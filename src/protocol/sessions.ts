import { z } from 'zod';
import { SignalSchema } from './machine-config.ts';

// Sessions on the wire (a Hangar extension): commands that outlive the connection that started
// them, with their output kept (capped) and readable from any byte offset.

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export const StartSessionRequestSchema = z.object({
  command: z.array(z.string()).min(1).meta({ description: 'Program and arguments, e.g. ["sh", "-c", "npm run dev"]' }),
  tty: z.boolean().optional().meta({ description: 'Run it on a terminal (a shell, a REPL, a TUI); attach to type into it' }),
  rows: z.int().min(1).max(1000).optional().meta({ description: 'Terminal rows with tty; default 24' }),
  cols: z.int().min(1).max(1000).optional().meta({ description: 'Terminal columns with tty; default 80' }),
  stdin: z.boolean().optional().meta({ description: 'Give the command a stdin to write to (…/input, attach); always so with tty, else /dev/null' }),
  env: z.record(z.string().regex(/^[^=\0]+$/), z.string()).optional().meta({ description: "Variables added to (or replacing) the machine's env; never stored" }),
  cwd: z.string().startsWith('/').optional().meta({ description: "Working directory; default the machine's" }),
  name: z.string().regex(NAME, 'letters, digits, ".", "_" and "-", at most 63, starting with a letter or digit').optional()
    .meta({ description: 'Usable in place of the id (the newest session of that name)' }),
});

export const SESSION_END_REASONS = ['exited', 'killed', 'machine_stopped', 'lost'] as const;

export const SessionSchema = z.object({
  id: z.string(),
  machine_id: z.string(),
  name: z.string(),
  command: z.array(z.string()),
  tty: z.boolean(),
  stdin: z.boolean(),
  state: z.enum(['running', 'exited']),
  created_at: z.string(),
  ended_at: z.string().nullable(),
  exit_code: z.int().nullable().meta({ description: '128+N when killed by signal N; null when it ended with no exit recorded (lost)' }),
  signal: z.string().optional().meta({ description: 'The signal that ended it, when one did' }),
  end_reason: z.enum(SESSION_END_REASONS).nullable()
    .meta({ description: 'exited: on its own; killed: through …/kill; machine_stopped: its machine stopped; lost: its shim vanished with no exit' }),
  output: z.object({ start: z.int(), end: z.int() })
    .meta({ description: 'Bytes [start, end) of its output are kept; older ones fell out of the scrollback' }),
});

export const SessionOutputQuerySchema = z.object({
  offset: z.coerce.number().int().min(0).optional().meta({ description: 'Byte offset to read from; default the start of the scrollback' }),
  tail_bytes: z.coerce.number().int().min(0).optional().meta({ description: 'Instead of offset: start this many bytes before the end' }),
  max_bytes: z.coerce.number().int().min(1).optional().meta({ description: 'Without follow: read at most this many bytes' }),
  follow: z.stringbool().default(false).meta({ description: 'Keep the stream open for new output until the session ends' }),
  encoding: z.enum(['utf8', 'base64']).default('utf8'),
});

/** One line of …/output (NDJSON) and one message of …/attach. */
export const SessionOutputEventSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('output'), offset: z.int(), size: z.int().meta({ description: 'Bytes of output this piece holds' }),
    data: z.string().meta({ description: 'The bytes as UTF-8 text (a piece never splits a character), or base64' }),
  }),
  z.object({ type: z.literal('gap'), from: z.int(), to: z.int() }).meta({ description: 'Bytes [from, to) are no longer kept (older than the scrollback)' }),
  z.object({ type: z.literal('end'), offset: z.int().meta({ description: 'Where to read from next' }), session: SessionSchema })
    .meta({ description: 'Last: without follow, where the output read stops; with follow, the session has ended' }),
]);

export const KillSessionRequestSchema = z.object({ signal: SignalSchema.optional().meta({ description: 'Default SIGKILL' }) });

export const SessionInputRequestSchema = z.object({
  data: z.string(),
  encoding: z.enum(['utf8', 'base64']).default('utf8'),
});

export const SessionParams = z.object({ app_name: z.string().min(1), machine_id: z.string().min(1), session_id: z.string().min(1) });

export type StartSessionRequest = z.input<typeof StartSessionRequestSchema>;
export type Session = z.infer<typeof SessionSchema>;
export type SessionOutputEvent = z.infer<typeof SessionOutputEventSchema>;
export type SessionOutputQuery = z.input<typeof SessionOutputQuerySchema>;
