import { z } from 'zod';
import { EXEC_STREAM_DEFAULT_TIMEOUT_S, ExecStreamRequestSchema, MaxOutputBytesSchema } from '../protocol/schemas.ts';
import type { ExecChunk } from '../sdk/index.ts';
import { appArg, CHANGES, machineArg, READ_ONLY, tool, type ToolContext } from './tool-def.ts';
import { SENDS_PROGRESS } from './progress.ts';

// What runs inside a machine: commands (machine_exec) and the main process's output (machine_logs).

const MAX_FOLLOW_S = 60;
/** The most log text one machine_logs answer carries; a model's context is the scarce thing. */
const MAX_ANSWER_BYTES = 256 * 1024;
/** What one machine_exec answer keeps of the output by default: enough to read, small enough for a context. */
const EXEC_ANSWER_BYTES = 32 * 1024;
/** Output streamed as progress notifications before they only count bytes, once a second. */
const PROGRESS_OUTPUT_BYTES = 64 * 1024;
const PROGRESS_COUNT_EVERY_MS = 1000;

/** Sends a command's output as progress: all of it up to a limit, then how much has come. */
async function outputAsProgress(chunks: AsyncIterable<ExecChunk>, ctx: ToolContext): Promise<void> {
  let bytes = 0;
  let countedAt = 0;
  for await (const chunk of chunks) {
    const room = PROGRESS_OUTPUT_BYTES - bytes;
    const data = Buffer.from(chunk.data);
    bytes += data.length;
    if (room > 0) await ctx.progress(data.length > room ? data.subarray(0, room).toString() : chunk.data);
    else if (Date.now() - countedAt >= PROGRESS_COUNT_EVERY_MS) {
      countedAt = Date.now();
      await ctx.progress(`[${bytes} bytes of output so far]`);
    }
  }
}

/** The last of `lines` that fit in `maxBytes`. */
function latestWithin(lines: string[], maxBytes: number): { lines: string[]; truncated: boolean } {
  let bytes = 0;
  let from = lines.length;
  while (from > 0 && bytes + Buffer.byteLength(lines[from - 1]!) + 1 <= maxBytes) bytes += Buffer.byteLength(lines[--from]!) + 1;
  return { lines: lines.slice(from), truncated: from > 0 };
}

export const processTools = [
  tool({
    name: 'machine_exec',
    description:
      'Run a command in a started machine and return its stdout, stderr and exit_code. ' +
      `Its output streams as progress notifications (the first ${PROGRESS_OUTPUT_BYTES / 1024} KiB, then a byte count each second). ${SENDS_PROGRESS} ` +
      `The answer keeps at most max_output_bytes of output (default ${EXEC_ANSWER_BYTES / 1024} KiB): the head and tail of each stream, ` +
      'with a marked line and stdout_truncated_bytes/stderr_truncated_bytes saying how much was left out of the middle. For big output, write it to a file and file_read it. ' +
      'A stopped machine is started first (started: true) unless its services turn autostart off; a running command keeps the machine from being stopped as idle, ' +
      'and one cut short by a stop is an error whose stopped field says who stopped it and why. ' +
      'checkpoint: true captures the machine first (milliseconds), so a command that breaks things can be undone with checkpoint_restore. ' +
      'For a shell line use ["sh", "-c", "..."]. For the output of the machine\'s own main process use machine_logs.',
    input: {
      app: appArg,
      id: machineArg,
      command: ExecStreamRequestSchema.shape.command,
      timeout_s: ExecStreamRequestSchema.shape.timeout.meta({ description: `Seconds before the command is killed; default ${EXEC_STREAM_DEFAULT_TIMEOUT_S}` }),
      stdin: ExecStreamRequestSchema.shape.stdin,
      cwd: ExecStreamRequestSchema.shape.cwd,
      env: ExecStreamRequestSchema.shape.env,
      checkpoint: ExecStreamRequestSchema.shape.checkpoint,
      max_output_bytes: MaxOutputBytesSchema(EXEC_ANSWER_BYTES),
    },
    annotations: CHANGES,
    run: async ({ app, id, command, timeout_s, stdin, cwd, env, checkpoint, max_output_bytes }, ctx) => {
      const body = {
        command, ...(timeout_s ? { timeout: timeout_s } : {}), ...(stdin !== undefined ? { stdin } : {}), ...(cwd ? { cwd } : {}), ...(env ? { env } : {}),
        ...(checkpoint ? { checkpoint: true } : {}),
      };
      const run = ctx.client.machines.execStream(app, id, body, { signal: ctx.signal, maxOutputBytes: max_output_bytes ?? EXEC_ANSWER_BYTES });
      await outputAsProgress(run, ctx);
      const r = await run.wait();
      const data = {
        exit_code: r.exitCode,
        ...(r.exitSignal !== undefined ? { exit_signal: r.exitSignal } : {}),
        stdout: r.stdout,
        stderr: r.stderr,
        stdout_truncated_bytes: r.stdoutTruncatedBytes,
        stderr_truncated_bytes: r.stderrTruncatedBytes,
        timed_out: r.timedOut,
        ...(r.checkpointId ? { checkpoint_id: r.checkpointId } : {}),
        ...(r.started ? { started: true } : {}),
        ...(r.stopped ? { stopped: r.stopped } : {}),
      };
      const how = r.stopped ? `did not finish: ${r.stopped.message}\nhint: ${r.stopped.hint}`
        : r.timedOut ? `timed out after ${timeout_s ?? EXEC_STREAM_DEFAULT_TIMEOUT_S}s` : r.exitSignal !== undefined ? `killed by signal ${r.exitSignal}` : `exit ${r.exitCode}`;
      const undo = r.checkpointId ? ` (checkpoint ${r.checkpointId} before it: checkpoint_restore rolls it back)` : '';
      // The text block is the output as a person reads it, not the JSON again: it is the big part.
      const text = [r.stdout && `stdout:\n${r.stdout}`, r.stderr && `stderr:\n${r.stderr}`].filter(Boolean).join('\n') || '(no output)';
      const woke = r.started ? ' (the machine was stopped; it was started for this command)' : '';
      return { summary: `${command.join(' ')}: ${how}${undo}${woke}`, data, text, ...(r.stopped ? { failed: true } : {}) };
    },
  }),
  tool({
    name: 'machine_ps',
    description: 'List the processes running in a started machine (pid, command, memory, CPU) and the ports each listens on. Use it to check a server came up.',
    input: { app: appArg, id: machineArg },
    annotations: READ_ONLY,
    run: async ({ app, id }, ctx) => {
      const processes = await ctx.client.machines.ps(app, id, { signal: ctx.signal });
      const ports = processes.flatMap((p) => p.listen_sockets.map((s) => `${s.proto} ${s.address} (${p.command})`));
      return { summary: `${processes.length} process(es); listening: ${ports.length ? ports.join(', ') : 'nothing'}`, data: { processes } };
    },
  }),
  tool({
    name: 'machine_logs',
    description:
      "Recent stdout and stderr lines of the machine's main process (its init.cmd), also after it stopped; not the output of machine_exec commands. " +
      `follow_s keeps collecting new lines for that many seconds (at most ${MAX_FOLLOW_S}), streaming them as progress notifications. ` +
      `An answer carries at most ${MAX_ANSWER_BYTES / 1024} KiB of lines (truncated: true says some were left out); a line over 64 KiB comes in pieces.`,
    input: {
      app: appArg,
      id: machineArg,
      lines: z.int().min(1).max(10_000).default(100).meta({ description: 'How many recent lines; default 100' }),
      follow_s: z.int().min(1).max(MAX_FOLLOW_S).optional().meta({ description: `Also wait this many seconds for new lines (at most ${MAX_FOLLOW_S})` }),
    },
    annotations: READ_ONLY,
    run: async ({ app, id, lines, follow_s }, ctx) => {
      if (!follow_s) {
        const got = latestWithin((await ctx.client.machines.logs(app, id, { tail: lines, signal: ctx.signal })).lines, MAX_ANSWER_BYTES);
        return { summary: `${got.lines.length} line(s) from ${id}${got.truncated ? ' (older ones left out: over the size limit)' : ''}`, data: got };
      }
      const got: string[] = [];
      let bytes = 0;
      let truncated = false;
      const timer = AbortSignal.timeout(follow_s * 1000);
      try {
        for await (const l of ctx.client.machines.followLogs(app, id, { tail: lines, signal: AbortSignal.any([ctx.signal, timer]) })) {
          // A machine can write faster than any answer can carry: stop collecting at the limit.
          bytes += Buffer.byteLength(l) + 1;
          if (bytes > MAX_ANSWER_BYTES) {
            truncated = true;
            break;
          }
          got.push(l);
          await ctx.progress(l);
        }
      } catch (err) {
        // Reaching follow_s is how a follow ends; any other failure is the caller's to see.
        if (!timer.aborted || ctx.signal.aborted) throw err;
      }
      const why = truncated ? `, stopped early at the ${MAX_ANSWER_BYTES / 1024} KiB answer limit` : ` over ${follow_s}s`;
      return { summary: `${got.length} line(s) from ${id}${why}`, data: { lines: got, truncated } };
    },
  }),
];
