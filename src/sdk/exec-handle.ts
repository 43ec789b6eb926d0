import type { ExecEvent } from '../protocol/schemas.ts';
import { DEFAULT_MAX_OUTPUT_BYTES, keepOutputs, OutputKeeper } from '../protocol/output-cap.ts';
import { HangarApiError } from './errors.ts';
import { splitStream } from './response-stream.ts';

// A command running in a machine: output as it is produced, `wait()` for the result, `kill()`
// to stop it (the server kills the command when the stream is abandoned). The result keeps at
// most `maxOutputBytes` of output (head and tail); the chunks iterated are all of it.

export type ExecChunk = { stream: 'stdout' | 'stderr'; data: string };
export type ExecResult = {
  exitCode: number; exitSignal?: number; stdout: string; stderr: string; timedOut: boolean; cancelled: boolean;
  /** Bytes left out of the middle of each stream (over maxOutputBytes); a marked line stands in for them. */
  stdoutTruncatedBytes: number;
  stderrTruncatedBytes: number;
  /** The checkpoint taken before the command, when `checkpoint: true` asked for one. */
  checkpointId?: string;
  /** The machine was stopped and this call started it. */
  started?: boolean;
  /** The machine was stopped while the command ran, which ended it: who stopped it, why, and what to do. */
  stopped?: ExitEvent['stopped'];
};

type ExitEvent = Extract<ExecEvent, { type: 'exit' }>;

/** Output gathered for a command's result: the head and tail of each stream, within one budget. */
export class ResultOutput {
  readonly #max: number;
  readonly #encoder = new TextEncoder();
  readonly #kept: Record<'stdout' | 'stderr', OutputKeeper>;

  constructor(maxOutputBytes = DEFAULT_MAX_OUTPUT_BYTES) {
    this.#max = maxOutputBytes;
    this.#kept = { stdout: new OutputKeeper(maxOutputBytes), stderr: new OutputKeeper(maxOutputBytes) };
  }

  add(stream: 'stdout' | 'stderr', data: string): void {
    this.#kept[stream].push(this.#encoder.encode(data));
  }

  /** The result of the command from its exit event and the output gathered before it. */
  result(exit: ExitEvent): ExecResult {
    const { stdout, stderr } = keepOutputs(this.#kept.stdout, this.#kept.stderr, this.#max);
    return {
      exitCode: exit.exit_code, ...(exit.exit_signal !== undefined ? { exitSignal: exit.exit_signal } : {}),
      stdout: stdout.text, stderr: stderr.text, stdoutTruncatedBytes: stdout.droppedBytes, stderrTruncatedBytes: stderr.droppedBytes,
      timedOut: exit.timed_out, cancelled: exit.cancelled, ...(exit.checkpoint_id ? { checkpointId: exit.checkpoint_id } : {}),
      ...(exit.started ? { started: true } : {}),
      ...(exit.stopped ? { stopped: exit.stopped } : {}),
    };
  }
}

export class ExecHandle implements AsyncIterable<ExecChunk> {
  readonly #abort: AbortController;
  readonly #chunks: ExecChunk[] = [];
  readonly #waiters: Array<() => void> = [];
  readonly #result: Promise<ExecResult>;
  readonly #maxOutputBytes: number;
  #ended = false;

  constructor(response: Promise<Response>, abort: AbortController, maxOutputBytes = DEFAULT_MAX_OUTPUT_BYTES) {
    this.#abort = abort;
    this.#maxOutputBytes = maxOutputBytes;
    this.#result = this.#consume(response);
    this.#result.catch(() => undefined).finally(() => {
      this.#ended = true;
      this.#wake();
    });
  }

  /** Output chunks in order, as the command produces them. */
  async *[Symbol.asyncIterator](): AsyncIterator<ExecChunk> {
    let next = 0;
    for (;;) {
      while (next < this.#chunks.length) yield this.#chunks[next++]!;
      if (this.#ended) return;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** Resolves with the output (within maxOutputBytes) and exit code once the command ends. */
  wait(): Promise<ExecResult> {
    return this.#result;
  }

  /** Stops the command; `wait()` then resolves or rejects with the abort. */
  kill(): void {
    this.#abort.abort();
  }

  async #consume(response: Promise<Response>): Promise<ExecResult> {
    const res = await response;
    const out = new ResultOutput(this.#maxOutputBytes);
    for await (const line of splitStream(res, '\n')) {
      const msg = JSON.parse(line) as ExecEvent;
      if (msg.type === 'exit') return out.result(msg);
      out.add(msg.type, msg.data);
      this.#chunks.push({ stream: msg.type, data: msg.data });
      this.#wake();
    }
    throw new HangarApiError(502, { hint: 'the connection to the daemon ended; check the machine with machines.get' }, 'exec stream ended without an exit status');
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}
