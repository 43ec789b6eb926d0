// Buffered command output is bounded: a command can write gigabytes, an answer must not carry
// them. Each stream keeps its first and its last bytes; at the end the streams share one budget
// and what does not fit is dropped from the middle and counted, so the start (the setup, the
// first error) and the end (the result, the last error) both survive. No Node APIs: the SDK
// uses this in browsers too.

export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;
export const MAX_MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

/** One stream's output: its first `limitBytes` and its last `limitBytes`, and how much there was. */
export class OutputKeeper {
  readonly #limit: number;
  readonly #head: Uint8Array[] = [];
  #headBytes = 0;
  // Bytes after the head; trimmed from the front while what stays is at least the limit.
  readonly #tail: Uint8Array[] = [];
  #tailBytes = 0;
  totalBytes = 0;

  constructor(limitBytes: number) {
    this.#limit = limitBytes;
  }

  push(chunk: Uint8Array): void {
    this.totalBytes += chunk.length;
    let rest = chunk;
    if (this.#headBytes < this.#limit) {
      const take = Math.min(rest.length, this.#limit - this.#headBytes);
      this.#head.push(rest.subarray(0, take));
      this.#headBytes += take;
      rest = rest.subarray(take);
    }
    if (rest.length === 0) return;
    this.#tail.push(rest);
    this.#tailBytes += rest.length;
    while (this.#tailBytes - this.#tail[0]!.length >= this.#limit) this.#tailBytes -= this.#tail.shift()!.length;
  }

  /** The output within `budgetBytes` (at most the limit): all of it, or its head and tail, cut at characters, with the gap marked. */
  keep(budgetBytes: number): KeptOutput {
    const decode = (bytes: Uint8Array) => new TextDecoder('utf-8').decode(bytes);
    if (this.totalBytes <= budgetBytes) return { text: decode(concat([...this.#head, ...this.#tail])), droppedBytes: 0 };
    const head = utf8Head(concat(this.#head).subarray(0, Math.ceil(budgetBytes / 2)));
    const all = concat([...this.#head, ...this.#tail]);
    const tail = utf8Tail(all.subarray(Math.max(0, all.length - Math.floor(budgetBytes / 2))));
    const droppedBytes = this.totalBytes - head.length - tail.length;
    return { text: `${decode(head)}${gapMarker(droppedBytes)}${decode(tail)}`, droppedBytes };
  }
}

/** A stream's kept output; where `droppedBytes` were left out, `text` says so on a line of its own. */
export type KeptOutput = { text: string; droppedBytes: number };

/** The line standing in for the middle of an output too big to keep. */
export function gapMarker(droppedBytes: number): string {
  return `\n[hangar: ${droppedBytes} bytes of output left out here; raise max_output_bytes or stream the command]\n`;
}

/** Splits `totalBytes` over streams of these sizes: one smaller than an equal share keeps all of it, the rest share what is left. */
export function shareBudget(sizes: number[], totalBytes: number): number[] {
  const out = new Array<number>(sizes.length).fill(0);
  let left = totalBytes;
  let streams = sizes.length;
  for (const i of sizes.map((_, i) => i).sort((a, b) => sizes[a]! - sizes[b]!)) {
    out[i] = Math.min(sizes[i]!, Math.floor(left / streams--));
    left -= out[i]!;
  }
  return out;
}

/** stdout and stderr kept within one budget. */
export function keepOutputs(stdout: OutputKeeper, stderr: OutputKeeper, maxBytes: number): { stdout: KeptOutput; stderr: KeptOutput } {
  const [outBudget, errBudget] = shareBudget([stdout.totalBytes, stderr.totalBytes], maxBytes);
  return { stdout: stdout.keep(outBudget!), stderr: stderr.keep(errBudget!) };
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

const isContinuation = (b: number) => (b & 0xc0) === 0x80;

/** `bytes` without a character cut off at its end. */
function utf8Head(bytes: Uint8Array): Uint8Array {
  let start = bytes.length - 1;
  while (start >= 0 && start > bytes.length - 4 && isContinuation(bytes[start]!)) start--;
  if (start < 0) return bytes;
  const lead = bytes[start]!;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return bytes.length - start < need ? bytes.subarray(0, start) : bytes;
}

/** `bytes` without a character cut off at its start. */
function utf8Tail(bytes: Uint8Array): Uint8Array {
  let start = 0;
  while (start < 3 && start < bytes.length && isContinuation(bytes[start]!)) start++;
  return bytes.subarray(start);
}
