import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Worker } from '@temporalio/worker';
import { env } from '../support/system.js';

/**
 * Replays recorded histories (test/replay/histories, made by `npm run record-histories`) against today's workflow code:
 * a change that would make running deployment or build workflows fail with a non-determinism error fails here.
 */
describe('recorded workflow histories replay on the current code', () => {
  it('replays every recorded history without a non-determinism error', async () => {
    const dir = path.join(import.meta.dirname, 'histories');
    const files = (await readdir(dir)).filter((f) => f.endsWith('.json')).sort();
    assert.ok(files.length >= 7, `only ${files.length} recorded histories`);
    const histories = await Promise.all(
      // The replayer converts the CLI's JSON itself (with the SDK's own protobuf instance).
      files.map(async (f) => ({ workflowId: f, history: JSON.parse(await readFile(path.join(dir, f), 'utf8')) as unknown })),
    );
    const failures: string[] = [];
    const replayed: string[] = [];
    for await (const result of Worker.runReplayHistories({ workflowBundle: { codePath: env('GG_TEST_WORKFLOW_BUNDLE') } }, histories)) {
      replayed.push(result.workflowId);
      if (result.error) failures.push(`${result.workflowId}: ${result.error.message}`);
    }
    assert.deepEqual(failures, []);
    assert.deepEqual(replayed.sort(), files, 'each history was replayed once');
  });
});
