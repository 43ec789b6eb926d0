// Bytes of a machine's log into lines of bounded size. The machine decides what it writes, so a
// "line" may be gigabytes with no newline: the reader never holds more than one line's worth,
// and a longer line comes out in pieces of at most MAX_LINE_BYTES.

export const MAX_LINE_BYTES = 64 * 1024;

export class LineSplitter {
  readonly #maxBytes: number;
  #partial: Buffer[] = [];
  #partialBytes = 0;

  constructor(maxBytes = MAX_LINE_BYTES) {
    this.#maxBytes = maxBytes;
  }

  /** The lines (and pieces of over-long lines) that `chunk` completes. The chunk may be reused afterwards. */
  push(chunk: Buffer): string[] {
    const out: string[] = [];
    for (let start = 0; ; ) {
      const newline = chunk.indexOf(0x0a, start);
      this.#append(chunk.subarray(start, newline < 0 ? chunk.length : newline), out);
      if (newline < 0) return out;
      out.push(this.#take());
      start = newline + 1;
    }
  }

  /** What is left of a line that has no newline yet, if anything. */
  flush(): string[] {
    return this.#partialBytes > 0 ? [this.#take()] : [];
  }

  #append(bytes: Buffer, out: string[]): void {
    while (this.#partialBytes + bytes.length > this.#maxBytes) {
      const room = this.#maxBytes - this.#partialBytes;
      // Cut before a UTF-8 continuation byte, so no character is split between two pieces.
      let cut = room;
      while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--;
      if (cut === 0 && this.#partialBytes === 0) cut = room;
      this.#partial.push(bytes.subarray(0, cut));
      this.#partialBytes += cut;
      out.push(this.#take());
      bytes = bytes.subarray(cut);
    }
    if (bytes.length === 0) return;
    this.#partial.push(Buffer.from(bytes));
    this.#partialBytes += bytes.length;
  }

  #take(): string {
    const line = Buffer.concat(this.#partial, this.#partialBytes).toString('utf8');
    this.#partial = [];
    this.#partialBytes = 0;
    return line;
  }
}
