import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readOutputs } from '../../activities/execution/outputs.js';
import { MAX_OUTPUTS_BYTES } from '../../core/outputs.js';

describe('readOutputs', () => {
  let root: string;
  let n = 0;
  const stateWith = async (write: (file: string) => Promise<unknown>) => {
    const dir = path.join(root, `state-${n++}`);
    await mkdir(dir);
    await write(path.join(dir, 'outputs.json'));
    return dir;
  };
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'gg-outputs-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('returns the object a template wrote', async () => {
    const dir = await stateWith((f) => writeFile(f, '{"url":"https://x","n":1}'));
    assert.deepEqual(await readOutputs(dir), { outputs: { url: 'https://x', n: 1 }, warnings: [] });
  });

  it('treats a missing file as no outputs, without a warning', async () => {
    const dir = await stateWith(() => Promise.resolve());
    assert.deepEqual(await readOutputs(dir), { warnings: [] });
  });

  it('warns about invalid JSON and about JSON that is not an object', async () => {
    for (const content of ['{not json', '[1,2]', '"text"', 'null']) {
      const dir = await stateWith((f) => writeFile(f, content));
      const result = await readOutputs(dir);
      assert.equal(result.outputs, undefined, content);
      assert.equal(result.warnings.length, 1, content);
    }
  });

  it('never follows a symbolic link out of the state folder', async () => {
    const secret = path.join(root, 'host-secret.json');
    await writeFile(secret, '{"password":"hunter2"}');
    const dir = await stateWith((f) => symlink(secret, f));
    const result = await readOutputs(dir);
    assert.equal(result.outputs, undefined);
    assert.match(result.warnings[0] ?? '', /symbolic link/);
  });

  it('does not block on a FIFO and ignores directories', async () => {
    const fifoDir = await stateWith((f) => Promise.resolve(execFileSync('mkfifo', [f])));
    assert.match((await readOutputs(fifoDir)).warnings[0] ?? '', /not a regular file/);
    const dirDir = await stateWith((f) => mkdir(f));
    assert.equal((await readOutputs(dirDir)).outputs, undefined);
  });

  it('refuses files over the size limit', async () => {
    const dir = await stateWith((f) => writeFile(f, `{"x":"${'a'.repeat(MAX_OUTPUTS_BYTES)}"}`));
    assert.match((await readOutputs(dir)).warnings[0] ?? '', /over the/);
  });
});
