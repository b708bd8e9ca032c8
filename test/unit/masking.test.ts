import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Masker, secretStrings } from '../../activities/execution/masking.js';

const maskAll = (values: string[], pieces: string[]): string => {
  const m = new Masker(values);
  return Buffer.concat([...pieces.map((p) => m.push(Buffer.from(p))), m.end()]).toString();
};

describe('Masker', () => {
  it('masks every occurrence of every value', () => {
    assert.equal(maskAll(['hunter2', 'tok-123'], ['pw=hunter2 token=tok-123 again hunter2\n']), 'pw=*** token=*** again ***\n');
  });

  it('finds a value split across pieces, however the stream is cut', () => {
    const text = 'before hunter2 middle hunter2hunter2 after';
    const expected = 'before *** middle ****** after';
    for (let cut = 0; cut <= text.length; cut++) {
      assert.equal(maskAll(['hunter2'], [text.slice(0, cut), text.slice(cut)]), expected, `cut at ${cut}`);
    }
    assert.equal(maskAll(['hunter2'], text.split('')), expected, 'one byte at a time');
  });

  it('gives the same result however the stream is cut, with values that overlap each other', () => {
    const values = ['aXa', 'XaX', 'aXaXa', 'pässwört'];
    const text = Buffer.from('aXaXaXa XaXaX pässwörtaXa aaXaa pässwör pässwört');
    const whole = maskAll(values, [text.toString()]);
    for (let size = 1; size <= 7; size++) {
      for (let start = 0; start < size; start++) {
        const m = new Masker(values);
        const out: Buffer[] = [m.push(text.subarray(0, start))];
        for (let at = start; at < text.length; at += size) out.push(m.push(text.subarray(at, at + size)));
        out.push(m.end());
        assert.equal(Buffer.concat(out).toString(), whole, `pieces of ${size} from ${start}`);
      }
    }
  });

  it('releases a piece at once unless its end could still grow into a value', () => {
    const m = new Masker(['pw-0123456789ab', 'other-secret']);
    assert.equal(m.push(Buffer.from('first line\n')).toString(), 'first line\n', 'nothing held back without a partial value');
    assert.equal(m.push(Buffer.from('see pw-01')).toString(), 'see ', 'a possible value is held back');
    assert.equal(m.push(Buffer.from('23456789ab and oth')).toString(), '*** and ');
    assert.equal(m.push(Buffer.from('erwise\n')).toString(), 'otherwise\n', 'released once it cannot be a value');
    assert.equal(m.push(Buffer.from('pw-')).toString(), '');
    assert.equal(m.end().toString(), 'pw-', 'the end releases what was held');
  });

  it('masks the longer of two overlapping values whole', () => {
    assert.equal(maskAll(['abc', 'abcdef'], ['xxabcdefxx abc']), 'xx***xx ***');
  });

  it('leaves text without values alone, and ignores values too short to mask safely', () => {
    assert.equal(maskAll([], ['plain text']), 'plain text');
    assert.equal(maskAll(['a', ''], ['a banana']), 'a banana');
  });

  it('masks multi-line and non-ASCII values', () => {
    const pem = '-----BEGIN KEY-----\nMIIB\n-----END KEY-----';
    assert.equal(maskAll([pem, 'pässwört'], [`key:\n${pem.slice(0, 10)}`, `${pem.slice(10)}\nand pässwört`]), 'key:\n***\nand ***');
  });

  it('turns non-string values into their JSON text', () => {
    assert.deepEqual(secretStrings({ a: 'x', n: 12345, o: { k: 'v' } }), ['x', '12345', '{"k":"v"}']);
  });
});
