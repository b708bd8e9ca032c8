import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { reconcileRuns } from '../../workers/reconciler.js';
import { createDeployment, registerExampleTemplate } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { env, eventually, startTestSystem, type TestSystem } from '../support/system.js';

/** A worker as its own process (with this file's configuration), so a test can kill -9 it mid-run. */
function startWorkerProcess(sys: TestSystem, which: 'cluster'): ChildProcess & { polling: Promise<void> } {
  return spawnWorker(which, [], {
    DATABASE_URL: env('GG_TEST_DATABASE_URL'),
    TEMPORAL_ADDRESS: sys.config.temporal.address,
    GLIDERGUN_TASK_QUEUE: sys.config.temporal.taskQueue,
    GLIDERGUN_WORKFLOW_BUNDLE: env('GG_TEST_WORKFLOW_BUNDLE'),
    GLIDERGUN_DATA_DIR: sys.config.dataDir,
  });
}

/**
 * The built-in node's worker as a process of its own, as a remote node runs (`npm run node-worker`): its
 * identity folder and the gateway only, with the work and secrets folders the test system's node uses.
 */
async function startNodeWorkerProcess(sys: TestSystem): Promise<ChildProcess & { polling: Promise<void> }> {
  const identity = await sys.nodeIdentity();
  return spawnWorker('node', ['--dir', identity.dir], {
    GLIDERGUN_NODE_WORK_DIR: sys.config.node.workDir,
    GLIDERGUN_SECRETS_DIR: sys.config.node.secretsDir,
    GLIDERGUN_NODE_RUNNER_IMAGE: env('GG_TEST_NODE_RUNNER_IMAGE'),
    GLIDERGUN_NODE_SHUTDOWN_GRACE_SECONDS: '2',
  });
}

function spawnWorker(which: 'node' | 'cluster', args: string[], workerEnv: Record<string, string>): ChildProcess & { polling: Promise<void> } {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, `../../workers/${which}-main.ts`), ...args], {
    env: { ...process.env, ...workerEnv },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const polling = new Promise<void>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (/polls task queue/.test(stderr)) resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`the ${which} worker exited (${code ?? signal}) before polling:\n${stderr}`)));
  });
  polling.catch(() => undefined); // awaited by the tests that need it
  return Object.assign(child, { polling });
}

/**
 * A template that prints `line 1` to `line <lines>`, one every ~50 ms, so it writes all through a worker's
 * death and restart; it counts its runs in /state like the example template (outputs.runCount).
 */
function countingImage(sys: TestSystem, lines: number): Promise<string> {
  return scriptImage(
    sys.docker,
    `#!/bin/sh
runs=$(cat /state/run-count 2>/dev/null || echo 0)
runs=$((runs + 1))
echo "$runs" > /state/run-count
i=1
while [ "$i" -le ${lines} ]; do echo "line $i"; i=$((i + 1)); sleep 0.05; done
echo "{\\"runCount\\": $runs}" > /state/outputs.json
`,
  );
}

const expectedLines = (lines: number): string => Array.from({ length: lines }, (_, i) => `line ${i + 1}\n`).join('');

/** The last numbered line in the engine's own log of the container (what the template wrote, watched or not). */
async function engineLastLine(sys: TestSystem, containerId: string): Promise<number> {
  const raw = await sys.docker.getContainer(containerId).logs({ stdout: true, stderr: false, follow: false });
  return Number([...raw.toString('latin1').matchAll(/line (\d+)\n/g)].at(-1)?.[1] ?? 0);
}

/** The last numbered line Glider Gun has stored for the run (what a worker watched). */
async function storedLastLine(sys: TestSystem, runId: string): Promise<number> {
  const text = await storedStdout(sys, runId);
  return Number([...text.matchAll(/line (\d+)\n/g)].at(-1)?.[1] ?? 0);
}

async function storedStdout(sys: TestSystem, runId: string): Promise<string> {
  const res = await fetch(`${sys.api.url}/v1/runs/${runId}/logs?stream=stdout`, { headers: { authorization: `Bearer ${sys.tokens.viewer}` } });
  assert.equal(res.status, 200);
  return res.text();
}


describe('crash safety', () => {
  let sys: TestSystem;
  const children: ChildProcess[] = [];
  before(async () => {
    sys = await startTestSystem({ nodeWorker: false });
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await sys.stop();
  });

  it('finishes a run whose node worker was killed with SIGKILL mid-run: the container is adopted, not started twice, its log has no gap or repeat', async () => {
    // ~45 s of printing: the retried attempt comes only after the heartbeat timeout (20 s) of the dead one.
    const lines = 900;
    const worker = await startNodeWorkerProcess(sys);
    children.push(worker);
    const template = await registerExampleTemplate(sys.call, { image: await countingImage(sys, lines) });
    const id = await createDeployment(sys.call, template, { message: 'survive' }, { kind: 'node', node: sys.nodeId });
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const runId = started.body.id;
    const label = { label: [`io.glider-gun.run=${runId}`] };
    const first = await eventually('the container to run', async () => (await sys.docker.listContainers({ filters: label }))[0], 60_000);
    await eventually('the worker to store the first lines', async () => ((await storedLastLine(sys, runId)) >= 20 ? true : undefined), 60_000);

    worker.kill('SIGKILL');
    await new Promise((r) => worker.once('exit', r));
    const atDeath = await engineLastLine(sys, first.Id);
    await eventually('the template to print while no worker watches it', async () => ((await engineLastLine(sys, first.Id)) >= atDeath + 20 ? true : undefined), 30_000);
    const restartedAt = Date.now();
    const restarted = await startNodeWorkerProcess(sys);
    children.push(restarted);
    // The new worker resumes the run (attempt 2, by its identity) while the template still prints: the log
    // is then made of what was stored, what the engine kept while no one watched, and what follows.
    await eventually(
      'the new worker to adopt the container while the template still prints',
      async () => {
        const pending = (await sys.client.workflow.getHandle(`deployment-${id}`).describe()).raw.pendingActivities ?? [];
        // Every attempt shows the node's identity (the gateway sets it): the new worker's is the one started after the restart.
        const resumed = pending.some(
          (a) => a.activityType?.name === 'executeRun' && (a.attempt ?? 0) >= 2 && Number(a.lastStartedTime?.seconds ?? 0) * 1000 >= restartedAt - 1000,
        );
        if (!resumed) return undefined;
        const info = await sys.docker.getContainer(first.Id).inspect();
        assert.ok(info.State.Running && (await engineLastLine(sys, first.Id)) < lines, 'the template had ended before the new worker adopted it');
        return true;
      },
      60_000,
    );

    const seen = new Set<string>();
    const run = await eventually(
      'the run to end after the restart',
      async () => {
        for (const c of await sys.docker.listContainers({ all: true, filters: label })) seen.add(c.Id);
        const r = await sys.call<{ status: string; outputs: { runCount: number }; stateVersion: number; message: string }>('GET', `/v1/runs/${runId}`);
        return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
      },
      120_000,
    );
    assert.equal(run.status, 'succeeded', run.message);
    assert.deepEqual([...seen], [first.Id], 'one container for the run, adopted by the new worker');
    assert.equal(run.outputs.runCount, 1, 'the template ran once');
    const versions = await sys.call<{ items: unknown[] }>('GET', `/v1/deployments/${id}/state-versions`);
    assert.equal(versions.body.items.length, 1, 'state archived once');
    const log = await storedStdout(sys, runId);
    assert.ok(log === expectedLines(lines), `the log is every line once, in order; got ${log.length} bytes, ending ${JSON.stringify(log.slice(-40))}`);
    await eventually('the container to be removed', async () => ((await sys.docker.listContainers({ all: true, filters: label })).length === 0 ? true : undefined), 30_000);
  });

  it('finishes a run whose cluster worker was killed with SIGKILL mid-run, recording the outcome once, its log with no gap or repeat', async () => {
    const lines = 600;
    const own = await startTestSystem({ clusterWorker: false });
    const cluster = [startWorkerProcess(own, 'cluster')];
    try {
      const template = await registerExampleTemplate(own.call, { image: await countingImage(own, lines) });
      const id = await createDeployment(own.call, template, { message: 'survive' }, { kind: 'node', node: own.nodeId });
      const started = await own.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
      const runId = started.body.id;
      const label = { label: [`io.glider-gun.run=${runId}`] };
      const first = await eventually('the container to run', async () => (await own.docker.listContainers({ filters: label }))[0], 60_000);
      await eventually('the first lines to be stored', async () => ((await storedLastLine(own, runId)) >= 20 ? true : undefined), 60_000);
      cluster[0]!.kill('SIGKILL');
      await new Promise((r) => cluster[0]!.once('exit', r));
      const atDeath = await storedLastLine(own, runId);
      await eventually('the template to print, and the node to store it, while no cluster worker runs', async () => ((await storedLastLine(own, runId)) >= atDeath + 20 ? true : undefined), 30_000);
      cluster.push(startWorkerProcess(own, 'cluster'));
      await cluster[1]!.polling;
      const info = await own.docker.getContainer(first.Id).inspect();
      assert.ok(info.State.Running, 'the template still prints when the new cluster worker starts');
      const seen = new Set<string>();
      const run = await eventually(
        'the run to end after the restart',
        async () => {
          for (const c of await own.docker.listContainers({ all: true, filters: label })) seen.add(c.Id);
          const r = await own.call<{ status: string; outputs: { runCount: number }; message: string }>('GET', `/v1/runs/${runId}`);
          return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
        },
        90_000,
      );
      assert.equal(run.status, 'succeeded', run.message);
      assert.deepEqual([...seen], [first.Id]);
      assert.equal(run.outputs.runCount, 1);
      const versions = await own.call<{ items: unknown[] }>('GET', `/v1/deployments/${id}/state-versions`);
      assert.equal(versions.body.items.length, 1);
      const log = await storedStdout(own, runId);
      assert.ok(log === expectedLines(lines), `the log is every line once, in order; got ${log.length} bytes, ending ${JSON.stringify(log.slice(-40))}`);
      await eventually('the container to be removed', async () => ((await own.docker.listContainers({ all: true, filters: label })).length === 0 ? true : undefined), 30_000);
    } finally {
      for (const c of cluster) c.kill('SIGKILL');
      await own.stop();
    }
  });
});

describe('a cancel while the run is still pending', () => {
  it('keeps the template from ever starting', async () => {
    // No cluster worker yet: the run stays pending in Postgres and unstarted in its workflow.
    const sys = await startTestSystem({ clusterWorker: false });
    const cluster: ChildProcess[] = [];
    try {
      const template = await registerExampleTemplate(sys.call);
      const id = await createDeployment(sys.call, template, { message: 'never' }, { kind: 'node', node: sys.nodeId });
      const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
      const cancel = await sys.call<{ status: string }>('POST', `/v1/runs/${started.body.id}/cancel`);
      assert.equal(cancel.status, 202);
      assert.equal(cancel.body.status, 'cancelling');
      cluster.push(startWorkerProcess(sys, 'cluster'));
      const run = await eventually('the run to be cancelled', async () => {
        const r = await sys.call<{ status: string; startedAt: string | null; message: string }>('GET', `/v1/runs/${started.body.id}`);
        return r.body.status === 'cancelled' ? r.body : undefined;
      }, 60_000);
      assert.equal(run.startedAt, null, 'it never started');
      assert.match(run.message, /before it started/);
      const events = await sys.docker.listContainers({ all: true, filters: { label: [`io.glider-gun.run=${started.body.id}`] } });
      assert.equal(events.length, 0);
    } finally {
      for (const c of cluster) c.kill('SIGKILL');
      await sys.stop();
    }
  });
});

describe('the run reconciler', () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem();
  });
  after(async () => {
    await sys.stop();
  });

  it("resumes a run whose workflow was terminated: the container is adopted and the run recorded", async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'orphan', sleep_seconds: 3 }, { kind: 'node', node: sys.nodeId });
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const label = { label: [`io.glider-gun.run=${started.body.id}`] };
    const first = await eventually('the container to run', async () => (await sys.docker.listContainers({ filters: label }))[0], 60_000);
    await sys.client.workflow.getHandle(`deployment-${id}`).terminate('test: an operator terminated it');
    const deps = { db: sys.db, temporal: sys.client, taskQueue: sys.config.temporal.taskQueue };
    // Scoped to this test's deployment: files running in parallel share the database.
    const scope = { deploymentIds: [id] };
    assert.deepEqual(await reconcileRuns(deps, 0, scope), [started.body.id]);
    const run = await eventually('the run to end', async () => {
      const r = await sys.call<{ status: string; outputs: { runCount: number }; stateVersion: number }>('GET', `/v1/runs/${started.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    }, 60_000);
    assert.equal(run.status, 'succeeded');
    assert.equal(run.outputs.runCount, 1, 'the template ran once: the container was adopted');
    assert.equal(run.stateVersion, 1);
    assert.deepEqual(await reconcileRuns(deps, 0, scope), [], 'nothing left to settle');
    void first;
  });

  it('stops a run being cancelled when its workflow was terminated: adopted, stopped, archived, cancelled', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'orphan', sleep_seconds: 60 }, { kind: 'node', node: sys.nodeId });
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const label = { label: [`io.glider-gun.run=${started.body.id}`] };
    await eventually('the container to run', async () => (await sys.docker.listContainers({ filters: label }))[0], 60_000);
    await sys.client.workflow.getHandle(`deployment-${id}`).terminate('test: an operator terminated it');
    const cancel = await sys.call<{ status: string }>('POST', `/v1/runs/${started.body.id}/cancel`);
    assert.equal(cancel.status, 202, 'accepted: the reconciler will stop it');
    assert.deepEqual(await reconcileRuns({ db: sys.db, temporal: sys.client, taskQueue: sys.config.temporal.taskQueue }, 0, { deploymentIds: [id] }), [started.body.id]);
    const run = await eventually('the run to be cancelled', async () => {
      const r = await sys.call<{ status: string; stateVersion: number | null }>('GET', `/v1/runs/${started.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    }, 60_000);
    assert.equal(run.status, 'cancelled');
    assert.equal(run.stateVersion, 1, 'its state was archived');
    await eventually('the container to be removed', async () => ((await sys.docker.listContainers({ all: true, filters: label })).length === 0 ? true : undefined), 30_000);
  });

  it('finishes a run whose workflow was reset to before the run began: the container is adopted', async () => {
    const { randomUUID } = await import('node:crypto');
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'reset', sleep_seconds: 4 }, { kind: 'node', node: sys.nodeId });
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const label = { label: [`io.glider-gun.run=${started.body.id}`] };
    const first = await eventually('the container to run', async () => (await sys.docker.listContainers({ filters: label }))[0], 60_000);
    const handle = sys.client.workflow.getHandle(`deployment-${id}`);
    const history = await handle.fetchHistory();
    const firstTask = history.events!.find((e) => e.workflowTaskCompletedEventAttributes)!;
    const { runId } = await handle.describe();
    await sys.client.workflowService.resetWorkflowExecution({
      namespace: sys.config.temporal.namespace,
      workflowExecution: { workflowId: `deployment-${id}`, runId },
      workflowTaskFinishEventId: firstTask.eventId,
      requestId: randomUUID(),
      reason: 'test: reset to the start',
    });
    const deps = { db: sys.db, temporal: sys.client, taskQueue: sys.config.temporal.taskQueue };
    const seen = new Set<string>();
    const run = await eventually('the run to end', async () => {
      for (const c of await sys.docker.listContainers({ all: true, filters: label })) seen.add(c.Id);
      await reconcileRuns(deps, 0, { deploymentIds: [id] });
      const r = await sys.call<{ status: string; outputs: { runCount: number } | null; message: string | null }>('GET', `/v1/runs/${started.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    }, 90_000);
    assert.equal(run.status, 'succeeded', run.message ?? '');
    assert.equal(run.outputs?.runCount, 1, 'the template ran once');
    assert.deepEqual([...seen], [first.Id]);
  });
});
