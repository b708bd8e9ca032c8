/**
 * What settles runs nothing is watching: the run reconciler as the cluster worker runs it (startReconciler,
 * with its filters), a run whose container was removed while its node worker was down (container-vanished;
 * the Kubernetes counterpart is reconciler-kubernetes.test.ts), and the node worker removing, when it
 * starts, what ended runs left behind.
 */
import assert from 'node:assert/strict';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEPLOYMENT_LABEL, MANAGED_LABEL, RUN_LABEL, WORKDIR_LABEL, containerName } from '../../activities/execution/adapter.js';
import { reconcileRuns, startReconciler } from '../../workers/reconciler.js';
import { deploymentWorkflowId, runRequestedSignal } from '../../workflows/messages.js';
import { createDeployment, registerExampleTemplate, waitForRun, type RunBody } from '../support/fixtures.js';
import { eventually, images, startTestSystem, type TestSystem } from '../support/system.js';

describe('the run reconciler and leftovers on a Docker node', () => {
  let sys: TestSystem;
  let template: string;
  before(async () => {
    sys = await startTestSystem();
    template = await registerExampleTemplate(sys.call);
  });
  after(async () => {
    await sys.stop();
  });

  const target = () => ({ kind: 'node', node: sys.nodeId });
  const label = (runId: string) => ({ label: [`${RUN_LABEL}=${runId}`] });

  async function startRun(parameters: Record<string, unknown>): Promise<{ deploymentId: string; runId: string; containerId: string }> {
    const deploymentId = await createDeployment(sys.call, template, parameters, target());
    const started = await sys.call<RunBody>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const container = await eventually('the container to run', async () => (await sys.docker.listContainers({ filters: label(started.body.id) }))[0], 60_000);
    return { deploymentId, runId: started.body.id, containerId: container.Id };
  }

  it('startReconciler hands over a run no workflow executes once it is older than its age, and leaves alone a run in progress and runs outside its scope', async () => {
    const deps = { db: sys.db, temporal: sys.client, taskQueue: sys.config.temporal.taskQueue };
    const ageSeconds = 8;
    const orphan = await startRun({ message: 'orphan', sleep_seconds: 25 });
    const busy = await startRun({ message: 'busy', sleep_seconds: 25 });
    const outside = await startRun({ message: 'outside', sleep_seconds: 25 });
    for (const r of [orphan, outside]) await sys.client.workflow.getHandle(deploymentWorkflowId(r.deploymentId)).terminate('test: an operator terminated it');

    const handed: string[] = [];
    const errors: unknown[] = [];
    const reconciler = startReconciler(deps, {
      everyMs: 250,
      olderThanSeconds: ageSeconds,
      scope: { deploymentIds: [orphan.deploymentId, busy.deploymentId] },
      onHanded: (runIds) => handed.push(...runIds),
      onError: (err) => errors.push(err),
    });
    try {
      const orphanHandle = sys.client.workflow.getHandle(deploymentWorkflowId(orphan.deploymentId));
      const resumed = await eventually('the orphaned run to be handed to a new execution', async () => {
        const d = await orphanHandle.describe();
        return d.status.name === 'RUNNING' ? d : undefined;
      }, 60_000);
      const startedAt = (await sys.call<{ startedAt: string }>('GET', `/v1/runs/${orphan.runId}`)).body.startedAt;
      assert.ok(
        resumed.startTime.getTime() >= Date.parse(startedAt) + ageSeconds * 1000,
        `handed over at ${resumed.startTime.toISOString()}, before the run (started ${startedAt}) was ${ageSeconds} s old`,
      );
      const orphanRun = await waitForRun(sys.call, orphan.runId);
      assert.equal(orphanRun.status, 'succeeded', orphanRun.message ?? '');
      assert.equal(orphanRun.outputs?.runCount, 1, 'its container was adopted');
      // The busy run was past the age for many rounds while its own workflow executed it.
      const busyRun = await waitForRun(sys.call, busy.runId);
      assert.equal(busyRun.status, 'succeeded', busyRun.message ?? '');
    } finally {
      await reconciler.stop();
    }
    assert.deepEqual(errors, []);
    // A round between the hand-over and the new execution taking the run up may hand it again (harmless: the
    // workflow queues a run id once); never another run.
    assert.deepEqual([...new Set(handed)], [orphan.runId]);
    const busyHistory = await sys.client.workflow.getHandle(deploymentWorkflowId(busy.deploymentId)).fetchHistory();
    const busySignals = (busyHistory.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === runRequestedSignal.name);
    assert.equal(busySignals.length, 1, 'the run in progress was signalled once, by the API');
    // Outside the scope: still active, its workflow still terminated, its container still running.
    assert.equal((await sys.call<RunBody>('GET', `/v1/runs/${outside.runId}`)).body.status, 'running');
    assert.equal((await sys.client.workflow.getHandle(deploymentWorkflowId(outside.deploymentId)).describe()).status.name, 'TERMINATED');
    assert.deepEqual(await reconcileRuns(deps, 0, { deploymentIds: [outside.deploymentId] }), [outside.runId]);
    assert.equal((await waitForRun(sys.call, outside.runId)).status, 'succeeded');
  });

  it('fails a run whose container was removed while its node worker was down as container-vanished, and never starts it again', async () => {
    const run = await startRun({ message: 'vanish', sleep_seconds: 60 });
    await sys.stopNodeWorker();
    try {
      // Stopping a worker never stops a template: the container is left for the next worker to adopt.
      assert.equal((await sys.docker.getContainer(run.containerId).inspect()).State.Running, true);
      await sys.docker.getContainer(run.containerId).remove({ force: true });
    } finally {
      await sys.startNodeWorker();
    }
    const seen = new Set<string>();
    const ended = await eventually('the run to end', async () => {
      for (const c of await sys.docker.listContainers({ all: true, filters: label(run.runId) })) seen.add(c.Id);
      const r = await sys.call<RunBody>('GET', `/v1/runs/${run.runId}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    }, 90_000);
    assert.equal(ended.status, 'failed', ended.message ?? '');
    assert.equal(ended.reason, 'container-vanished');
    assert.match(ended.message ?? '', /was started but no longer exists/);
    assert.deepEqual([...seen], [], 'no container was made again');
  });

  it('removes, when the node worker starts, what an ended run left behind, and keeps what an active run or another node has', async () => {
    // An ended run, and what a failed cleanup would have left of it: its container and its folder.
    const endedDeployment = await createDeployment(sys.call, template, { message: 'ended' }, target());
    const ended = await sys.call<RunBody>('POST', `/v1/deployments/${endedDeployment}/runs`, { action: 'deploy' });
    assert.equal((await waitForRun(sys.call, ended.body.id)).status, 'succeeded');
    await eventually('its own cleanup to be done', async () => ((await sys.docker.listContainers({ all: true, filters: label(ended.body.id) })).length === 0 ? true : undefined));
    const labels = (runId: string, workDir: string) => ({ [MANAGED_LABEL]: 'true', [RUN_LABEL]: runId, [DEPLOYMENT_LABEL]: endedDeployment, [WORKDIR_LABEL]: workDir });
    const leftover = await sys.docker.createContainer({ name: containerName(ended.body.id), Image: images.busybox, Cmd: ['sleep', '600'], Labels: labels(ended.body.id, sys.config.node.workDir) });
    await leftover.start();
    const leftoverDir = path.join(sys.config.node.workDir, 'runs', ended.body.id);
    await mkdir(path.join(leftoverDir, 'state'), { recursive: true });
    await writeFile(path.join(leftoverDir, 'started'), `${leftover.id}\n`);
    // Another node's (another work dir) leftover is not this node's to remove.
    const elsewhere = await sys.docker.createContainer({ Image: images.busybox, Cmd: ['sleep', '600'], Labels: labels(ended.body.id, `${sys.config.node.workDir}-elsewhere`) });
    try {
      const active = await startRun({ message: 'active', sleep_seconds: 15 });
      await sys.stopNodeWorker();
      await sys.startNodeWorker();

      await assert.rejects(leftover.inspect(), (err: { statusCode?: number }) => err.statusCode === 404, 'the ended run\'s container is removed');
      await assert.rejects(stat(leftoverDir), { code: 'ENOENT' }, 'and its folder');
      assert.ok((await elsewhere.inspect()).Id, 'another node\'s container is kept');
      const seen = new Set<string>();
      const run = await eventually('the active run to end', async () => {
        for (const c of await sys.docker.listContainers({ all: true, filters: label(active.runId) })) seen.add(c.Id);
        const r = await sys.call<RunBody>('GET', `/v1/runs/${active.runId}`);
        return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
      }, 90_000);
      assert.equal(run.status, 'succeeded', run.message ?? '');
      assert.equal(run.outputs?.runCount, 1);
      assert.deepEqual([...seen], [active.containerId], 'the active run\'s container was kept and adopted');
    } finally {
      await elsewhere.remove({ force: true });
    }
  });
});
