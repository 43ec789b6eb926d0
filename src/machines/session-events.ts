import type { OutputPiece } from '../runtime/session-output.ts';

// Turns a session's output pieces (raw bytes at absolute offsets) into wire events. As UTF-8
// text, a piece never ends inside a character: the bytes of a character cut at the end of what
// is written so far are held back (and the next offset points at them), so a reader polling with
// offsets gets every character whole. base64 passes the bytes as they are.

export type Encoding = 'utf8' | 'base64';
export type OutputEvent = { type: 'output'; offset: number; size: number; data: string } | { type: 'gap'; from: number; to: number };

/** How many bytes at the end of `buf` are the start of a character that is not complete yet. */
export function incompleteUtf8Tail(buf: Buffer): number {
  for (let back = 1; back <= Math.min(3, buf.length); back++) {
    const byte = buf[buf.length - back]!;
    if (byte < 0x80) return 0; // ASCII: complete
    if (byte >= 0xc0) {
      const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : 2;
      return back < need ? back : 0;
    }
    // a continuation byte: look further back for its lead
  }
  return 0;
}

/**
 * Events for `pieces`, and the offset to read from next. With `final` (the session has ended
 * and this is the last of its output), held-back bytes go out too, as they are.
 */
export async function* encodePieces(pieces: AsyncIterable<OutputPiece>, encoding: Encoding, final: () => boolean, next: { offset: number }): AsyncGenerator<OutputEvent> {
  let carry: { offset: number; data: Buffer } | undefined;
  for await (const piece of pieces) {
    if (piece.type === 'gap') {
      carry = undefined;
      next.offset = piece.to;
      yield piece;
      continue;
    }
    let { offset, data } = piece;
    if (carry && carry.offset + carry.data.length === offset) {
      data = Buffer.concat([carry.data, data]);
      offset = carry.offset;
    }
    carry = undefined;
    const held = encoding === 'utf8' ? incompleteUtf8Tail(data) : 0;
    if (held > 0) {
      carry = { offset: offset + data.length - held, data: Buffer.from(data.subarray(data.length - held)) };
      data = data.subarray(0, data.length - held);
    }
    next.offset = offset + data.length;
    if (data.length > 0) yield { type: 'output', offset, size: data.length, data: data.toString(encoding) };
  }
  if (carry && final()) {
    next.offset = carry.offset + carry.data.length;
    yield { type: 'output', offset: carry.offset, size: carry.data.length, data: carry.data.toString(encoding) };
  }
}
