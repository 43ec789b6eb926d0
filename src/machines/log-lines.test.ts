import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LineSplitter } from './log-lines.ts';

describe('LineSplitter', () => {
  it('splits on newlines across chunks, keeping a partial line until its end arrives', () => {
    const s = new LineSplitter(16);
    assert.deepEqual(s.push(Buffer.from('one\ntw')), ['one']);
    assert.deepEqual(s.push(Buffer.from('o\n\nthree')), ['two', '']);
    assert.deepEqual(s.flush(), ['three']);
    assert.deepEqual(s.flush(), []);
  });

  it('cuts a line longer than the limit into pieces of at most the limit', () => {
    const s = new LineSplitter(4);
    assert.deepEqual(s.push(Buffer.from('abcdefghij')), ['abcd', 'efgh']);
    assert.deepEqual(s.push(Buffer.from('k\nxy')), ['ijk']);
    // A line of exactly the limit is one line, with no empty piece after it.
    assert.deepEqual(s.push(Buffer.from('zw')), []);
    assert.deepEqual(s.push(Buffer.from('\n')), ['xyzw']);
  });

  it('never splits a UTF-8 character between two pieces', () => {
    const s = new LineSplitter(4);
    // "aé€" is 1 + 2 + 3 bytes: the 4-byte cut would fall inside the euro sign.
    assert.deepEqual(s.push(Buffer.from('aé€b\n')), ['aé', '€b']);
  });

  it('does not keep a view of the chunk it was given, which the caller reuses', () => {
    const s = new LineSplitter(64);
    const chunk = Buffer.from('kept');
    s.push(chunk);
    chunk.write('XXXX');
    assert.deepEqual(s.push(Buffer.from('\n')), ['kept']);
  });
});
