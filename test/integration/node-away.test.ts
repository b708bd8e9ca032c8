/**
 * A node that goes away after it took a run may still be applying it: the run must wait for the node to
 * come back (bounded by the run's own timeout), not fail as node-unavailable while its template goes on and
 * its state is never archived. A node away before it took the run still fails it after the bounded wait.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createDeployment, registerExampleTemplate, waitForExecuting, waitForRun } from '../support/fixtures.js';
import { eventually, startTestSystem, type TestSystem } from '../support/system.js';

describe('a node that goes away in the middle of a run', () => {
  let sys: TestSystem;
  before(async () => {
    // Far shorter than the node's absence below: without the wait for a run the node took, the run fails.
    sys = await startTestSystem({ env: { GLIDERGUN_NODE_WAIT_SECONDS: '3' } });
  });
  after(async () => {
    await sys.stop();
  });

  it('is waited for past the node wait, then the same container is adopted and the run succeeds with its state', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'away', sleep_seconds: 20 }, { kind: 'node', node: sys.nodeId });
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const runId = started.body.id;
    await waitForExecuting(sys.call, runId);
    const label = { label: [`io.glider-gun.run=${runId}`] };
    const [first] = await sys.docker.listContainers({ filters: label });
    assert.ok(first, 'the run\'s container runs');

    await sys.stopNodeWorker();
    try {
      // Away for longer than GLIDERGUN_NODE_WAIT_SECONDS (and than the retried attempt's wait for a worker).
      await new Promise((r) => setTimeout(r, 12_000));
      const meanwhile = await sys.call<{ status: string }>('GET', `/v1/runs/${runId}`);
      assert.equal(meanwhile.body.status, 'running', 'the run waits for its node');
    } finally {
      // Back whatever happened: the node removes what the run left.
      await sys.startNodeWorker();
    }

    const seen = new Set<string>();
    const run = await eventually('the run to end', async () => {
      for (const c of await sys.docker.listContainers({ all: true, filters: label })) seen.add(c.Id);
      const r = await sys.call<{ status: string; reason?: string; message?: string; stateVersion?: number; outputs: Record<string, unknown> }>('GET', `/v1/runs/${runId}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    }, 120_000);
    assert.equal(run.status, 'succeeded', `${run.reason}: ${run.message}`);
    assert.deepEqual([...seen], [first.Id], 'one container, adopted when the node came back');
    assert.equal(run.stateVersion, 1, 'its state archived');
    assert.equal(run.outputs.message, 'away');
  });

  it('still fails a run the node never took as node-unavailable after the bounded wait, its state untouched', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'never' }, { kind: 'node', node: sys.nodeId });
    const first = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    assert.equal((await waitForRun(sys.call, first.body.id)).status, 'succeeded');
    await sys.stopNodeWorker();
    try {
      const second = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
      const run = await waitForRun(sys.call, second.body.id, 60_000);
      assert.equal(run.status, 'failed');
      assert.equal(run.reason, 'node-unavailable');
      const dep = await sys.call<{ currentStateVersion: number }>('GET', `/v1/deployments/${id}`);
      assert.equal(dep.body.currentStateVersion, 1, 'the state is the one before');
    } finally {
      await sys.startNodeWorker();
    }
  });

  it('keeps the /state of a container whose run ended while its node was away: archived when the node is back, set apart as quarantined', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'late', sleep_seconds: 120 }, { kind: 'node', node: sys.nodeId });
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const runId = started.body.id;
    await waitForExecuting(sys.call, runId);
    const label = { label: [`io.glider-gun.run=${runId}`] };
    await sys.stopNodeWorker();
    try {
      // The run ends while its node is away; its container goes on (its template wrote /state/run-count).
      assert.equal((await sys.call('POST', `/v1/runs/${runId}/cancel`)).status, 202);
      assert.equal((await waitForRun(sys.call, runId, 60_000)).status, 'cancelled');
      assert.equal((await sys.docker.listContainers({ filters: label })).length, 1, 'its container still runs');
    } finally {
      await sys.startNodeWorker();
    }
    const versions = await eventually('the container\'s state to be archived, set apart', async () => {
      const list = await sys.call<{ items: { version: number; runId: string; quarantine: string | null }[] }>('GET', `/v1/deployments/${id}/state-versions`);
      return list.body.items.length > 0 ? list.body.items : undefined;
    }, 60_000);
    assert.equal(versions.length, 1);
    assert.equal(versions[0]!.runId, runId);
    assert.match(versions[0]!.quarantine ?? '', /had ended \(cancelled\)/);
    const dep = await sys.call<{ currentStateVersion: number | null }>('GET', `/v1/deployments/${id}`);
    assert.equal(dep.body.currentStateVersion, null, 'not current until promoted');
    const archive = await fetch(`${sys.api.url}/v1/deployments/${id}/state-versions/${versions[0]!.version}/archive`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } });
    assert.equal(archive.status, 200);
    await eventually('the container to be removed', async () => ((await sys.docker.listContainers({ all: true, filters: label })).length === 0 ? true : undefined));
  });
});
