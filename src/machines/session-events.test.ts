import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodePieces, incompleteUtf8Tail, type OutputEvent } from './session-events.ts';
import type { OutputPiece } from '../runtime/session-output.ts';

async function collect(pieces: OutputPiece[], final: boolean, encoding: 'utf8' | 'base64' = 'utf8'): Promise<{ events: OutputEvent[]; next: number }> {
  async function* gen() {
    yield* pieces;
  }
  const next = { offset: pieces[0]?.type === 'output' ? pieces[0].offset : 0 };
  const events: OutputEvent[] = [];
  for await (const e of encodePieces(gen(), encoding, () => final, next)) events.push(e);
  return { events, next: next.offset };
}

describe('session output as text', () => {
  it('finds a character cut at the end', () => {
    const e = Buffer.from('aé€😀');
    assert.equal(incompleteUtf8Tail(Buffer.from('abc')), 0);
    assert.equal(incompleteUtf8Tail(e), 0);
    assert.equal(incompleteUtf8Tail(e.subarray(0, e.length - 1)), 3);
    assert.equal(incompleteUtf8Tail(e.subarray(0, e.length - 3)), 1);
    assert.equal(incompleteUtf8Tail(Buffer.from('aé').subarray(0, 2)), 1);
  });

  it('never splits a character across pieces, and says where the held-back bytes start', async () => {
    const bytes = Buffer.from('x€y');
    const { events, next } = await collect([
      { type: 'output', offset: 10, data: bytes.subarray(0, 2) },
      { type: 'output', offset: 12, data: bytes.subarray(2) },
    ], false);
    assert.deepEqual(events, [
      { type: 'output', offset: 10, size: 1, data: 'x' },
      { type: 'output', offset: 11, size: 4, data: '€y' },
    ]);
    assert.equal(next, 15);
    const cut = await collect([{ type: 'output', offset: 0, data: bytes.subarray(0, 3) }], false);
    assert.equal(cut.next, 1, 'the next read starts at the cut character');
    const ended = await collect([{ type: 'output', offset: 0, data: bytes.subarray(0, 3) }], true);
    assert.equal(ended.next, 3, 'once the session has ended, the last bytes go out as they are');
  });

  it('passes a gap on and base64 untouched', async () => {
    const { events } = await collect([{ type: 'gap', from: 0, to: 8 }, { type: 'output', offset: 8, data: Buffer.from([0xe2, 0x82]) }], false, 'base64');
    assert.deepEqual(events, [{ type: 'gap', from: 0, to: 8 }, { type: 'output', offset: 8, size: 2, data: '4oI=' }]);
  });
});
