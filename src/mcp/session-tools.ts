import { z } from 'zod';
import { KillSessionRequestSchema, StartSessionRequestSchema } from '../protocol/sessions.ts';
import { appArg, CHANGES, DESTROYS, machineArg, READ_ONLY, tool } from './tool-def.ts';

// Sessions for robots: start a long command and come back for it, instead of holding one call
// open past a client's timeout. session_output answers are bounded and carry the offset to poll from.

const DEFAULT_ANSWER_BYTES = 16 * 1024;
const MAX_ANSWER_BYTES = 256 * 1024;
const MAX_WAIT_S = 60;
/** Once new output has come, how long to let more gather before answering. */
const GATHER_MS = 200;

const sessionArg = z.string().min(1).meta({ description: 'Session id (ses_…) or name' });

export const sessionTools = [
  tool({
    name: 'session_start',
    description:
      'Start a long-running command (a build, a test suite, a dev server, a shell with tty: true) in a started machine and return at once with its session id. ' +
      'It keeps running whatever happens to this connection, until it exits, is killed (session_kill) or the machine stops. ' +
      'Poll its output with session_output (pass next_offset back as offset). For a short command whose result you want now, use machine_exec.',
    input: {
      app: appArg,
      id: machineArg,
      command: StartSessionRequestSchema.shape.command,
      tty: StartSessionRequestSchema.shape.tty,
      stdin: StartSessionRequestSchema.shape.stdin,
      env: StartSessionRequestSchema.shape.env,
      cwd: StartSessionRequestSchema.shape.cwd,
      name: StartSessionRequestSchema.shape.name,
    },
    annotations: CHANGES,
    run: async ({ app, id, command, ...opts }, ctx) => {
      const s = await ctx.client.sessions.start(app, id, command, { ...opts, signal: ctx.signal });
      const state = s.state === 'running' ? 'running' : `already ended (exit ${s.exit_code})`;
      return { summary: `session ${s.id} ${state}: ${command.join(' ')}; read its output with session_output`, data: s };
    },
  }),
  tool({
    name: 'session_output',
    description:
      "A session's output (stdout and stderr together) and whether it is still running, with its exit_code once it ended. " +
      `At most max_bytes (default ${DEFAULT_ANSWER_BYTES / 1024} KiB) per answer: without offset, the latest output; with offset, from there on. ` +
      'Pass the answer\'s next_offset as offset to poll for what came after; more: true says there is already more to read. ' +
      `wait_s (at most ${MAX_WAIT_S}) waits that long for new output or the end before answering, so polling need not spin.`,
    input: {
      app: appArg,
      id: machineArg,
      session: sessionArg,
      offset: z.int().min(0).optional().meta({ description: 'Byte offset to read from (a next_offset from before); default: the latest max_bytes' }),
      max_bytes: z.int().min(1).max(MAX_ANSWER_BYTES).default(DEFAULT_ANSWER_BYTES).meta({ description: `Most bytes of output in the answer; default ${DEFAULT_ANSWER_BYTES}` }),
      wait_s: z.number().min(0).max(MAX_WAIT_S).optional().meta({ description: 'Wait up to this many seconds for output past offset, or the end' }),
    },
    annotations: READ_ONLY,
    run: async ({ app, id, session, offset, max_bytes, wait_s }, ctx) => {
      if (wait_s && offset !== undefined) {
        // Wait until something past offset exists (or the session ends); the read below takes it.
        const stop = new AbortController();
        const timer = setTimeout(() => stop.abort(), wait_s * 1000);
        try {
          for await (const e of ctx.client.sessions.follow(app, id, session, { offset, signal: AbortSignal.any([ctx.signal, stop.signal]) })) {
            if (e.type !== 'output') continue;
            await ctx.progress(`${e.size} bytes of new output`);
            clearTimeout(timer);
            setTimeout(() => stop.abort(), GATHER_MS);
          }
        } catch (err) {
          if (!stop.signal.aborted || ctx.signal.aborted) throw err;
        } finally {
          clearTimeout(timer);
        }
      }
      const read = await ctx.client.sessions.read(app, id, session, {
        ...(offset !== undefined ? { offset } : { tailBytes: max_bytes }),
        maxBytes: max_bytes,
        signal: ctx.signal,
      });
      const s = read.session;
      const more = read.nextOffset < s.output.end;
      const data = {
        output: read.data,
        offset: read.offset,
        next_offset: read.nextOffset,
        more,
        ...(read.gap ? { gap: read.gap } : {}),
        state: s.state,
        exit_code: s.exit_code,
        end_reason: s.end_reason,
      };
      const how = s.state === 'running' ? 'running' : `ended (${s.end_reason}, exit ${s.exit_code})`;
      const lost = read.gap ? `; bytes ${read.gap.from}-${read.gap.to} fell out of the scrollback` : '';
      return { summary: `session ${s.id} ${how}; ${Buffer.byteLength(read.data)} bytes from ${read.offset}, next_offset ${read.nextOffset}${more ? ' (more to read)' : ''}${lost}`, data };
    },
  }),
  tool({
    name: 'session_list',
    description: "The machine's sessions, running and recently ended, with exit codes and how much output each has, newest first.",
    input: { app: appArg, id: machineArg },
    annotations: READ_ONLY,
    run: async ({ app, id }, ctx) => {
      const sessions = await ctx.client.sessions.list(app, id, { signal: ctx.signal });
      const running = sessions.filter((s) => s.state === 'running').length;
      return { summary: `${sessions.length} session(s), ${running} running`, data: { sessions } };
    },
  }),
  tool({
    name: 'session_write',
    description: 'Write text to the stdin of a session started with stdin: true or tty: true (end a line with "\\n" to send it; "\\u0003" is Ctrl-C on a tty).',
    input: { app: appArg, id: machineArg, session: sessionArg, data: z.string().meta({ description: 'Text to write' }) },
    annotations: CHANGES,
    run: async ({ app, id, session, data }, ctx) => {
      await ctx.client.sessions.write(app, id, session, data, { signal: ctx.signal });
      return { summary: `wrote ${Buffer.byteLength(data)} bytes to session ${session}; read the answer with session_output`, data: { ok: true } };
    },
  }),
  tool({
    name: 'session_kill',
    description: "Stop a session's command (and what it started) with a signal, SIGKILL unless another is given; answers the session as it ended.",
    input: { app: appArg, id: machineArg, session: sessionArg, signal: KillSessionRequestSchema.shape.signal },
    annotations: DESTROYS,
    run: async ({ app, id, session, signal }, ctx) => {
      const s = await ctx.client.sessions.kill(app, id, session, signal, { signal: ctx.signal });
      return { summary: s.state === 'running' ? `session ${s.id} signalled; still running` : `session ${s.id} ended (exit ${s.exit_code})`, data: s };
    },
  }),
];
