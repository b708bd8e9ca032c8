import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { cancelSignal, deploymentWorkflowId, statusQuery } from '../../workflows/messages.js';
import { createDeployment, registerExampleTemplate, waitForExecuting, waitForRun, type RunBody } from '../support/fixtures.js';
import { apiClient, eventually, startTestSystem, type TestSystem } from '../support/system.js';

describe('a deployment runs its template container end to end', () => {
  let sys: TestSystem;
  let call: ReturnType<typeof apiClient>;
  let template: string;

  before(async () => {
    sys = await startTestSystem();
    call = sys.call;
    template = await registerExampleTemplate(call);
  });
  after(async () => {
    await sys.stop();
  });

  const target = () => ({ kind: 'node', node: sys.nodeId });

  async function runToEnd(deploymentId: string, action = 'deploy'): Promise<RunBody> {
    const started = await call<RunBody>('POST', `/v1/deployments/${deploymentId}/runs`, { action });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    assert.equal(started.body.status, 'pending');
    return eventually(`run ${started.body.id} to end`, async () => {
      const run = await call<RunBody>('GET', `/v1/runs/${started.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(run.body.status) ? run.body : undefined;
    });
  }

  it('succeeds, with the contract honoured and the status the same in the API and in a Temporal query', async () => {
    const id = await createDeployment(call, template, { message: 'hello "world"' }, target());
    const run = await runToEnd(id);
    assert.equal(run.status, 'succeeded', run.message ?? '');
    assert.equal(run.exitCode, 0);
    assert.equal(run.reason, null);

    // What the container saw, as it reported it in /state/outputs.json.
    const outputs = run.outputs!;
    assert.equal(outputs.action, 'deploy');
    assert.equal(outputs.argv, 'deploy');
    assert.deepEqual(outputs.parameters, { message: 'hello "world"', exit_code: 0, sleep_seconds: 0 });
    assert.deepEqual(outputs.tfVars, { TF_VAR_message: 'hello "world"', TF_VAR_exit_code: '0', TF_VAR_sleep_seconds: '0' });
    assert.deepEqual(outputs.env, {
      GLIDERGUN_CONTRACT_VERSION: '1',
      GLIDERGUN_ACTION: 'deploy',
      GLIDERGUN_DEPLOYMENT_ID: id,
      GLIDERGUN_RUN_ID: run.id,
    });

    const deployment = await call<{ status: string; outputs: unknown; lastRun: { id: string; status: string } }>('GET', `/v1/deployments/${id}`);
    assert.equal(deployment.body.status, 'succeeded');
    assert.equal(deployment.body.lastRun.id, run.id);
    assert.deepEqual(deployment.body.outputs, outputs);

    const handle = sys.client.workflow.getHandle(deploymentWorkflowId(id));
    const status = await handle.query(statusQuery);
    assert.equal(status.status, deployment.body.status);
    assert.deepEqual(status.lastRun, { id: run.id, action: 'deploy', status: 'succeeded', exitCode: 0 });
    assert.equal(status.activeRun, undefined);

    // The Temporal UI's filter: the deployment is found by its status search attribute.
    await eventually('the search attribute to be indexed', async () => {
      for await (const wf of sys.client.workflow.list({ query: `WorkflowId = '${deploymentWorkflowId(id)}' AND GliderGunStatus = 'succeeded'` })) {
        return wf;
      }
      return undefined;
    });
  });

  it('shows a failed destroy as such', async () => {
    const id = await createDeployment(call, template, { message: 'stuck', exit_code: 5 }, target());
    const failed = await runToEnd(id, 'destroy');
    assert.equal(failed.status, 'failed');
    const deployment = await call<{ status: string; lastRun: { action: string; status: string; exitCode: number } }>('GET', `/v1/deployments/${id}`);
    assert.equal(deployment.body.status, 'failed');
    assert.deepEqual(
      { action: deployment.body.lastRun.action, status: deployment.body.lastRun.status, exitCode: deployment.body.lastRun.exitCode },
      { action: 'destroy', status: 'failed', exitCode: 5 },
    );
  });

  it('fails with reason exit-code and keeps the exit code when the template exits non-zero', async () => {
    const id = await createDeployment(call, template, { message: 'bad', exit_code: 3 }, target());
    const run = await runToEnd(id);
    assert.equal(run.status, 'failed');
    assert.equal(run.reason, 'exit-code');
    assert.equal(run.exitCode, 3);
    assert.match(run.message ?? '', /exited with code 3/);
    const deployment = await call<{ status: string }>('GET', `/v1/deployments/${id}`);
    assert.equal(deployment.body.status, 'failed');
    const status = await sys.client.workflow.getHandle(deploymentWorkflowId(id)).query(statusQuery);
    assert.equal(status.status, 'failed');
    assert.equal(status.lastRun?.reason, 'exit-code');
  });

  it('runs again after a run ends, and a successful destroy leaves the deployment destroyed', async () => {
    const id = await createDeployment(call, template, { message: 'twice' }, target());
    const deploy = await runToEnd(id);
    assert.equal(deploy.status, 'succeeded');
    const destroy = await runToEnd(id, 'destroy');
    assert.equal(destroy.status, 'succeeded');
    assert.equal(destroy.outputs?.action, 'destroy');
    assert.equal(destroy.outputs?.runCount, 2, 'the destroy saw the deploy\'s /state');
    const deployment = await call<{ status: string }>('GET', `/v1/deployments/${id}`);
    assert.equal(deployment.body.status, 'destroyed');
    const runs = await call<{ items: { id: string; action: string }[] }>('GET', `/v1/deployments/${id}/runs`);
    assert.deepEqual(
      runs.body.items.map((r) => [r.id, r.action]),
      [
        [destroy.id, 'destroy'],
        [deploy.id, 'deploy'],
      ],
      'both runs, newest first',
    );
  });

  it('gives exactly one run to 50 concurrent requests on one deployment, and a clear refusal to the rest', async () => {
    const id = await createDeployment(call, template, { message: 'race' }, target());
    const operator = apiClient(sys.api.url, sys.tokens.operator);
    const answers = await Promise.all(Array.from({ length: 50 }, () => operator<{ id?: string; code?: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' })));
    const accepted = answers.filter((a) => a.status === 202);
    assert.equal(accepted.length, 1, JSON.stringify(answers.map((a) => a.status)));
    for (const a of answers.filter((x) => x.status !== 202)) {
      assert.ok((a.status === 409 && a.body.code === 'RUN_IN_PROGRESS') || (a.status === 429 && a.body.code === 'THROTTLED'), JSON.stringify(a.body));
    }
    const { rows } = await sys.db.query<{ n: string }>('SELECT count(*) n FROM runs WHERE deployment_id = $1', [id]);
    assert.equal(Number(rows[0]!.n), 1, 'no request was half-accepted');
    await eventually('the run to end', async () => {
      const r = await call<RunBody>('GET', `/v1/runs/${accepted[0]!.body.id!}`);
      return r.body.status === 'succeeded' ? r : undefined;
    });
  });

  it('refuses a second run while one is active, then accepts one after it ends', async () => {
    const id = await createDeployment(call, template, { message: 'slow', sleep_seconds: 2 }, target());
    const first = await call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    assert.equal(first.status, 202);
    const second = await call<{ code: string; details: { activeRunId: string } }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    assert.equal(second.status, 409);
    assert.equal(second.body.code, 'RUN_IN_PROGRESS');
    assert.equal(second.body.details.activeRunId, first.body.id);
    // Running is first `preparing` (started, its secrets sealed), then `executing` once its runner has restored
    // its state; the workflow reports the run as running throughout.
    await waitForExecuting(call, first.body.id);
    const running = await sys.client.workflow.getHandle(deploymentWorkflowId(id)).query(statusQuery);
    assert.equal(running.status, 'running');
    assert.equal(running.activeRun?.status, 'running');
    await eventually('the first run to end', async () => {
      const run = await call<RunBody>('GET', `/v1/runs/${first.body.id}`);
      return run.body.status === 'succeeded' ? run : undefined;
    });
    assert.equal((await runToEnd(id)).status, 'succeeded');
  });

  /** Proves from the workflow's history that a cancel naming `named` arrived while the last executeRun was in flight. */
  async function cancelArrivedWhileExecuting(deploymentId: string, named: string): Promise<void> {
    const events = (await sys.client.workflow.getHandle(deploymentWorkflowId(deploymentId)).fetchHistory()).events ?? [];
    const scheduled = events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'executeRun').at(-1);
    assert.ok(scheduled, 'the run was executed');
    const closed = events.find((e) => {
      const a = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskCanceledEventAttributes ?? e.activityTaskTimedOutEventAttributes;
      return Number(a?.scheduledEventId) === Number(scheduled.eventId);
    });
    assert.ok(closed, 'the run\'s executeRun ended');
    const signal = events.find((e) => {
      const a = e.workflowExecutionSignaledEventAttributes;
      const payload = a?.input?.payloads?.[0]?.data;
      return a?.signalName === cancelSignal.name && payload && (JSON.parse(Buffer.from(payload).toString('utf8')) as { runId?: string }).runId === named;
    });
    assert.ok(signal, `the cancel naming ${named} reached the workflow`);
    assert.ok(Number(scheduled.eventId) < Number(signal.eventId) && Number(signal.eventId) < Number(closed.eventId), 'it arrived while the template was executing');
  }

  it('ignores a cancel naming another run: the run goes on and succeeds', async () => {
    const id = await createDeployment(call, template, { message: 'stray', sleep_seconds: 5 }, target());
    const started = await call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const handle = sys.client.workflow.getHandle(deploymentWorkflowId(id));
    await waitForExecuting(call, started.body.id);
    await handle.signal(cancelSignal, { runId: 'run-000000000000' });
    const run = await waitForRun(call, started.body.id);
    assert.equal(run.status, 'succeeded', run.message ?? '');
    assert.equal(run.outputs?.runCount, 1, 'the template ran to its end, once');
    await cancelArrivedWhileExecuting(id, 'run-000000000000');
  });

  it('a late cancel cannot hit the next run: a cancel naming an ended run leaves the run after it alone', async () => {
    const id = await createDeployment(call, template, { message: 'late' }, target());
    const first = await runToEnd(id);
    assert.equal(first.status, 'succeeded', first.message ?? '');
    assert.equal((await call('POST', `/v1/deployments/${id}/upgrade`, { parameters: { message: 'late', sleep_seconds: 5 } })).status, 200);
    const next = await call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    assert.equal(next.status, 202);
    const handle = sys.client.workflow.getHandle(deploymentWorkflowId(id));
    await waitForExecuting(call, next.body.id);
    // Through the API the ended run cannot be cancelled; the signal is what a cancel sent just before the
    // first run ended would look like when it arrives late.
    const refused = await call<{ code: string }>('POST', `/v1/runs/${first.id}/cancel`);
    assert.equal(refused.status, 409);
    assert.equal(refused.body.code, 'RUN_NOT_ACTIVE');
    await handle.signal(cancelSignal, { runId: first.id });
    const run = await waitForRun(call, next.body.id);
    assert.equal(run.status, 'succeeded', run.message ?? '');
    assert.equal(run.outputs?.runCount, 2);
    await cancelArrivedWhileExecuting(id, first.id);
  });

  it('cancels the named run through the workflow\'s cancel signal', async () => {
    const sleepSeconds = 60;
    const id = await createDeployment(call, template, { message: 'long', sleep_seconds: sleepSeconds }, target());
    const started = await call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const handle = sys.client.workflow.getHandle(deploymentWorkflowId(id));
    await waitForExecuting(call, started.body.id);
    const t0 = Date.now();
    await handle.signal(cancelSignal, { runId: started.body.id });
    const run = await waitForRun(call, started.body.id, sleepSeconds * 2000);
    // A ratio, not a tight bound (which would flake on a loaded 2-core machine): ended in under half of the
    // template's sleep, the template was stopped, not waited for.
    assert.ok(Date.now() - t0 < (sleepSeconds * 1000) / 2, `cancel took ${Date.now() - t0} ms`);
    assert.equal(run.status, 'cancelled', run.message ?? '');
    assert.equal(run.reason, null);
    assert.equal((await call<{ status: string }>('GET', `/v1/deployments/${id}`)).body.status, 'cancelled');
    assert.equal((await handle.query(statusQuery)).status, 'cancelled');
    // Removed right after the outcome is recorded (never before).
    await eventually('the container to be removed', async () => {
      const containers = await sys.docker.listContainers({ all: true, filters: { label: [`io.glider-gun.run=${run.id}`] } });
      return containers.length === 0 ? true : undefined;
    });
  });

  it('cancels a running run through the API, records who asked, and refuses to cancel an ended run', async () => {
    const id = await createDeployment(call, template, { message: 'long', sleep_seconds: 60 }, target());
    const started = await call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    await eventually('the container to run', async () => {
      const [c] = await sys.docker.listContainers({ filters: { label: [`io.glider-gun.run=${started.body.id}`] } });
      return c;
    });
    const operator = apiClient(sys.api.url, sys.tokens.operator);
    const viewer = apiClient(sys.api.url, sys.tokens.viewer);
    assert.equal((await viewer('POST', `/v1/runs/${started.body.id}/cancel`)).status, 403);
    const cancel = await operator<RunBody & { cancelRequestedBy: string }>('POST', `/v1/runs/${started.body.id}/cancel`);
    assert.equal(cancel.status, 202);
    assert.equal(cancel.body.status, 'cancelling');
    assert.match(cancel.body.cancelRequestedBy, /^operator-/);
    assert.equal((await operator('POST', `/v1/runs/${started.body.id}/cancel`)).status, 202, 'asking again is harmless');
    const run = await eventually('the run to be cancelled', async () => {
      const r = await call<RunBody & { cancelRequestedBy: string; stateVersion: number | null }>('GET', `/v1/runs/${started.body.id}`);
      return r.body.status === 'cancelled' ? r.body : undefined;
    });
    assert.match(run.cancelRequestedBy, /^operator-/);
    assert.equal(run.stateVersion, 1, 'the state was archived');
    const log = await fetch(`${sys.api.url}/v1/runs/${run.id}/logs`, { headers: { authorization: `Bearer ${sys.tokens.viewer}` } });
    assert.match(await log.text(), /^example template: action=deploy/, 'what it printed before the cancel is kept');
    await eventually('the container, the run folder and the activity to be gone', async () => {
      const containers = await sys.docker.listContainers({ all: true, filters: { label: [`io.glider-gun.run=${run.id}`] } });
      const described = await sys.client.workflow.getHandle(deploymentWorkflowId(id)).describe();
      const activities = described.raw.pendingActivities?.length ?? 0;
      return containers.length === 0 && !existsSync(`${sys.config.node.workDir}/runs/${run.id}`) && activities === 0 ? true : undefined;
    });
    const again = await operator<{ code: string }>('POST', `/v1/runs/${started.body.id}/cancel`);
    assert.equal(again.status, 409);
    assert.equal(again.body.code, 'RUN_NOT_ACTIVE');
    assert.equal((await operator<{ code: string }>('POST', '/v1/runs/run-aaaaaaaaaaaa/cancel')).status, 404);
    // The deployment is free again (and this run is cancelled too, so nothing outlives the test).
    const next = await call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'destroy' });
    assert.equal(next.status, 202);
    assert.equal((await call('POST', `/v1/runs/${next.body.id}/cancel`)).status, 202);
    await eventually('the second run to end', async () => {
      const r = await call<RunBody>('GET', `/v1/runs/${next.body.id}`);
      return r.body.status === 'cancelled' ? r : undefined;
    });
  });

  it('fails a run with reason image-unavailable when the image cannot be had, leaving nothing behind', async () => {
    const missing = await registerExampleTemplate(call, { image: 'glider-gun/no-such-image:never' });
    const id = await createDeployment(call, missing, { message: 'x' }, target());
    const run = await runToEnd(id);
    assert.equal(run.status, 'failed');
    assert.equal(run.reason, 'image-unavailable');
    assert.match(run.message ?? '', /no-such-image/);
  });
});

describe('a run whose node has no worker', () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem({ nodeWorker: false, env: { GLIDERGUN_NODE_WAIT_SECONDS: '2' } });
  });
  after(async () => {
    await sys.stop();
  });

  it('fails as node-unavailable after the configured wait instead of waiting forever', async () => {
    const call = sys.call;
    const template = await registerExampleTemplate(call);
    const id = await createDeployment(call, template, { message: 'x' }, { kind: 'node', node: sys.nodeId });
    const started = await call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const run = await eventually('the run to fail', async () => {
      const r = await call<RunBody>('GET', `/v1/runs/${started.body.id}`);
      return r.body.status === 'failed' ? r.body : undefined;
    });
    assert.equal(run.reason, 'node-unavailable');
    const status = await sys.client.workflow.getHandle(deploymentWorkflowId(id)).query(statusQuery);
    assert.equal(status.status, 'failed');
  });

});

describe('a run waiting for its node', () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem({ nodeWorker: false, env: { GLIDERGUN_NODE_WAIT_SECONDS: '120' } });
  });
  after(async () => {
    await sys.stop();
  });

  it('can be cancelled', async () => {
    const call = sys.call;
    const template = await registerExampleTemplate(call);
    const id = await createDeployment(call, template, { message: 'x' }, { kind: 'node', node: sys.nodeId });
    const started = await call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    await eventually('the run to wait for the node', async () => {
      const r = await call<RunBody>('GET', `/v1/runs/${started.body.id}`);
      return r.body.status === 'running' ? r : undefined;
    });
    assert.equal((await call('POST', `/v1/runs/${started.body.id}/cancel`)).status, 202);
    const run = await eventually('the run to be cancelled', async () => {
      const r = await call<RunBody>('GET', `/v1/runs/${started.body.id}`);
      return ['cancelled', 'failed'].includes(r.body.status) ? r.body : undefined;
    });
    assert.equal(run.status, 'cancelled');
  });
});

describe('cancelling the deployment workflow itself (the Temporal UI\'s Cancel)', () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem();
  });
  after(async () => {
    await sys.stop();
  });

  it('cancels the current run, records it, ends the workflow, and a later run starts a new workflow', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'long', sleep_seconds: 60 }, { kind: 'node', node: sys.nodeId });
    const started = await sys.call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const handle = sys.client.workflow.getHandle(deploymentWorkflowId(id));
    await waitForExecuting(sys.call, started.body.id);
    await handle.cancel();
    const run = await eventually('the run to be cancelled', async () => {
      const r = await sys.call<RunBody>('GET', `/v1/runs/${started.body.id}`);
      return r.body.status === 'cancelled' ? r.body : undefined;
    });
    assert.equal(run.status, 'cancelled');
    const described = await eventually('the workflow to close', async () => {
      const d = await handle.describe();
      return d.status.name === 'RUNNING' ? undefined : d;
    });
    assert.equal(described.status.name, 'CANCELLED');
    await eventually('the container to be removed', async () => {
      const cs = await sys.docker.listContainers({ all: true, filters: { label: [`io.glider-gun.run=${run.id}`] } });
      return cs.length === 0 ? true : undefined;
    });
    // The deployment is usable again: a new run starts a new workflow run.
    await sys.db.query(`UPDATE deployments SET parameters = parameters || '{"sleep_seconds": 0}' WHERE id = $1`, [id]);
    const next = await sys.call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    assert.equal(next.status, 202);
    const done = await eventually('the next run to end', async () => {
      const r = await sys.call<RunBody>('GET', `/v1/runs/${next.body.id}`);
      return ['succeeded', 'failed'].includes(r.body.status) ? r.body : undefined;
    });
    assert.equal(done.status, 'succeeded');
  });
});

describe('a long-lived deployment workflow', () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem();
  });
  after(async () => {
    await sys.stop();
  });

  it('continues as new when idle, keeping its status, and goes on taking runs', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'again' }, { kind: 'node', node: sys.nodeId });
    // Started the way the API starts it, but with a threshold low enough to cross in one run.
    const first = await sys.client.workflow.start('deploymentWorkflow', {
      workflowId: deploymentWorkflowId(id),
      taskQueue: sys.config.temporal.taskQueue,
      args: [{ deploymentId: id, template, target: { kind: 'node', node: sys.nodeId }, clusterTaskQueue: sys.config.temporal.taskQueue, status: 'new', pending: [], continueAsNewAfterEvents: 10 }],
    });
    const runOnce = async () => {
      const started = await sys.call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
      return eventually('the run to end', async () => {
        const r = await sys.call<RunBody>('GET', `/v1/runs/${started.body.id}`);
        return r.body.status === 'succeeded' ? r.body : undefined;
      });
    };
    const one = await runOnce();
    const continued = await eventually('the first execution to continue as new', async () => {
      const d = await sys.client.workflow.getHandle(deploymentWorkflowId(id), first.firstExecutionRunId).describe();
      return d.status.name === 'CONTINUED_AS_NEW' ? d : undefined;
    });
    assert.equal(continued.status.name, 'CONTINUED_AS_NEW');
    const latest = sys.client.workflow.getHandle(deploymentWorkflowId(id));
    const status = await latest.query(statusQuery);
    assert.equal(status.status, 'succeeded');
    assert.equal(status.lastRun?.id, one.id, 'the new execution carried the state over');
    const two = await runOnce();
    assert.equal(two.outputs?.runCount, 2);
    assert.notEqual((await latest.describe()).runId, first.firstExecutionRunId);
  });
});
