import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseOutputs } from '../../core/outputs.js';

// How the file is read (never through a link, a regular file, at most 1 MiB) is the runner's: outputs_test.go.
describe('parseOutputs', () => {
  it('returns the object a template wrote', () => {
    assert.deepEqual(parseOutputs('{"url":"https://x","n":1}'), { outputs: { url: 'https://x', n: 1 }, warnings: [] });
  });

  it('warns about invalid JSON and about JSON that is not an object, and gives no outputs', () => {
    for (const content of ['{not json', '[1,2]', '"text"', 'null', '']) {
      const result = parseOutputs(content);
      assert.equal(result.outputs, undefined, content);
      assert.equal(result.warnings.length, 1, content);
      assert.match(result.warnings[0]!, /outputs\.json/, content);
    }
  });
});
