/**
 * A node's activities (activities/node.ts) trust no field of a task: a run id is checked before it reaches a
 * path or a call, what the run executes comes from its grant (checked too), and its secrets open only with
 * the node's own sealing key.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import type { ApplicationFailure } from '@temporalio/common';
import { generateNodeKeyPair, sealForNode } from '../../core/crypto.js';
import type { RunOutcome, RunSpec } from '../../core/domain.js';
import type { ExecutionAdapter } from '../../activities/execution/adapter.js';
import { NoGrantError, createNodeActivities } from '../../activities/node.js';

const RUN = 'run-abcdefghij01';
const spec = (over: Partial<RunSpec> = {}): RunSpec => ({
  runId: RUN,
  deploymentId: 'dep-abcdefghij01',
  action: 'deploy',
  image: 'registry.local/t:1',
  parameters: { a: 1 },
  env: { GLIDERGUN_RUN_ID: RUN },
  timeoutSeconds: 60,
  stopGraceSeconds: 2,
  ...over,
});

function setup(grant: (runId: string) => Promise<unknown>) {
  const keys = generateNodeKeyPair();
  const executed: { spec: RunSpec; secrets: Record<string, unknown>; cancelled: boolean }[] = [];
  const cleaned: string[] = [];
  const asked: string[] = [];
  const adapter: ExecutionAdapter = {
    execute: (s, secrets, ctx) => {
      executed.push({ spec: s, secrets, cancelled: ctx.signal.aborted });
      return Promise.resolve({ status: 'succeeded' } satisfies RunOutcome);
    },
    cleanup: (runId) => {
      cleaned.push(runId);
      return Promise.resolve();
    },
  };
  const activities = createNodeActivities({
    adapter,
    sealingKeyPem: keys.privateKeyPem,
    grants: {
      grant: (runId) => {
        asked.push(runId);
        return grant(runId);
      },
    },
  });
  const env = new MockActivityEnvironment();
  return {
    keys,
    executed,
    cleaned,
    asked,
    exec: (input: { runId: string; cancelNow?: boolean }) => env.run((i: typeof input) => activities.executeRun(i), input),
    clean: (runId: string) => env.run((id: string) => activities.cleanupRun(id), runId),
  };
}

const refused = (pattern: RegExp) => (err: unknown) => {
  const failure = err as ApplicationFailure;
  assert.equal(failure.nonRetryable, true, `non-retryable: ${String(err)}`);
  assert.match(failure.message, pattern);
  return true;
};

describe('node activities', () => {
  it('execute the grant the node API gives for the run named, with secrets opened by the node\'s key', async () => {
    const t = setup(() => Promise.resolve({ spec: spec(), secrets: sealForNode(t.keys.publicKey, Buffer.from('{"password":"hunter22"}')) }));
    const outcome = await t.exec({ runId: RUN });
    assert.deepEqual(outcome, { status: 'succeeded' });
    assert.deepEqual(t.asked, [RUN]);
    assert.deepEqual(t.executed[0]?.secrets, { password: 'hunter22' });
    assert.equal(t.executed[0]?.spec.image, 'registry.local/t:1');
    assert.equal(t.executed[0]?.cancelled, false);
  });

  it('refuse a run id that is not one, before it reaches a path or the node API', async () => {
    const t = setup(() => Promise.resolve({ spec: spec() }));
    for (const runId of ['../../..', 'run-abcdefghij01/../../etc', 'RUN-ABCDEFGHIJ01', '', 'run-abc']) {
      await assert.rejects(t.exec({ runId }), refused(/is not a run id/), runId);
      await assert.rejects(t.clean(runId), refused(/is not a run id/), runId);
    }
    await assert.rejects(t.exec({ cancelNow: true } as unknown as { runId: string }), refused(/names its run/), 'a task without a run');
    assert.deepEqual(t.asked, []);
    assert.deepEqual(t.cleaned, []);
    await t.clean(RUN);
    assert.deepEqual(t.cleaned, [RUN]);
  });

  it('take nothing but the run id from a task that carries a whole spec (workflows from before grants): the grant is what runs', async () => {
    const t = setup(() => Promise.resolve({ spec: spec() }));
    const sealedElsewhere = sealForNode(generateNodeKeyPair().publicKey, Buffer.from('{"password":"planted"}'));
    const task = { ...spec({ image: 'evil.example/planted:1', env: { PLANTED: '1' } }), secrets: sealedElsewhere };
    assert.deepEqual(await t.exec(task as unknown as { runId: string }), { status: 'succeeded' });
    assert.deepEqual(t.asked, [RUN]);
    assert.equal(t.executed[0]?.spec.image, 'registry.local/t:1');
    assert.deepEqual(t.executed[0]?.spec.env, { GLIDERGUN_RUN_ID: RUN });
    assert.deepEqual(t.executed[0]?.secrets, {});
  });

  it('refuse a grant for another run, with fields that would reach a path or the environment, or sealed to another key', async () => {
    const other = generateNodeKeyPair();
    const cases: [unknown, RegExp][] = [
      [{ spec: spec({ runId: 'run-zzzzzzzzzzzz' }) }, /got one for run-zzzzzzzzzzzz/],
      [{ spec: spec({ deploymentId: '../x' }) }, /spec\.deploymentId/],
      [{ spec: spec({ env: { 'A=B C': 'x' } }) }, /spec\.env/],
      [{ spec: { runId: RUN } }, /the grant of run .* is not valid/],
      [{ spec: spec(), secrets: sealForNode(other.publicKey, Buffer.from('{}')) }, /sealed for another node key/],
    ];
    for (const [grant, pattern] of cases) {
      const t = setup(() => Promise.resolve(grant));
      await assert.rejects(t.exec({ runId: RUN }), refused(pattern), pattern.source);
      assert.deepEqual(t.executed, [], pattern.source);
    }
  });

  it('end the run when the node API has no grant for it, and leave other failures to the retry policy', async () => {
    const gone = setup(() => Promise.reject(new NoGrantError('404 RUN_NOT_OF_NODE')));
    await assert.rejects(gone.exec({ runId: RUN }), refused(/no grant for run run-abcdefghij01: 404 RUN_NOT_OF_NODE/));
    const down = setup(() => Promise.reject(new Error('the gateway cannot be reached')));
    await assert.rejects(down.exec({ runId: RUN }), (err: Error) => !(err as Partial<ApplicationFailure>).nonRetryable && /cannot be reached/.test(err.message));
  });

  it('stop at once when the task or the grant says so, but never keep on what the grant says to stop', async () => {
    const t = setup(() => Promise.resolve({ spec: spec({ cancelNow: true }) }));
    await t.exec({ runId: RUN, cancelNow: false });
    assert.equal(t.executed[0]?.cancelled, true);
    assert.equal(t.executed[0]?.spec.cancelNow, true);
    const u = setup(() => Promise.resolve({ spec: spec() }));
    await u.exec({ runId: RUN, cancelNow: true });
    assert.equal(u.executed[0]?.cancelled, true);
  });
});
