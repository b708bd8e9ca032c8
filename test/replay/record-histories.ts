/**
 * `npm run record-histories [-- name ...]`: records the workflow histories that test/replay/replay.test.ts
 * replays, by driving the real system (the API, real workers, Temporal, Postgres, Docker and, for the
 * histories that need it, the Kubernetes test cluster) on services of its own, as `npm test` starts them.
 *
 * It writes only histories whose file does not exist yet, and names those it skipped: a committed history is
 * never overwritten (test/replay/append-only.test.ts fails if one changes). Never re-record to make a failing
 * replay pass: that failure means running workflows would break; guard the change with `patched()`. To
 * record a scenario again for new workflow code, add it under a new name.
 *
 * Each recording is checked before it is written: the scenario must have shown what it is named after (its
 * run's outcome), and the history must replay on the workflow code that made it.
 *
 *   GG_TEST_KUBERNETES=0   no test cluster: the histories that need it are not recorded (and named)
 *   DATABASE_URL, DOCKER_HOST   as for `npm test`
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Worker } from '@temporalio/worker';
import { pushImageTo } from '../../infra/dev/kubernetes.js';
import { say } from '../../infra/dev/progress.js';
import { startTestServices, type TestServices } from '../../infra/dev/test-services.js';
import { reconcileRuns } from '../../workers/reconciler.js';
import { buildWorkflowId } from '../../workflows/build.js';
import { cancelSignal, deploymentWorkflowId, statusQuery } from '../../workflows/messages.js';
import { tgzOf } from '../support/archives.js';
import { EXAMPLE_PARAMETERS, createDeployment, registerExampleTemplate, uniqueName, waitForExecuting, waitForRun, type RunBody } from '../support/fixtures.js';
import { env, eventually, images, kubernetesEnv, startTestSystem, type TestSystem } from '../support/system.js';

const HISTORIES = path.join(import.meta.dirname, 'histories');

/** What a scenario leaves to be saved: one execution of one workflow (the latest when no runId). */
interface Recorded {
  /** The system that ran it. */
  sys: TestSystem;
  workflowId: string;
  runId?: string | undefined;
}

interface Scenario {
  /** The history's file name, without .json. */
  name: string;
  /** The Kubernetes test cluster: the `cluster` target, or its registry (template builds push there). */
  needsCluster?: boolean;
  record(ctx: Context): Promise<Recorded>;
}

interface Context {
  /** A system with a node worker (and the builder, when there is a registry), shared by the scenarios. */
  system(): Promise<TestSystem>;
  /** A system of the scenario's own (stopped at the end). */
  own(opts: Parameters<typeof startTestSystem>[0]): Promise<TestSystem>;
}

const startRun = async (sys: TestSystem, deploymentId: string, action = 'deploy') => {
  const r = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.id;
};
const ended = async (sys: TestSystem, runId: string, status: string, reason?: string) => {
  const run = await waitForRun(sys.call, runId);
  assert.equal(run.status, status, `run ${runId}: ${JSON.stringify(run)}`);
  if (reason) assert.equal(run.reason, reason, `run ${runId}: ${JSON.stringify(run)}`);
  return run;
};
const executing = async (sys: TestSystem, deploymentId: string) => {
  const runId = await eventually('the run to start', async () => (await sys.client.workflow.getHandle(deploymentWorkflowId(deploymentId)).query(statusQuery)).activeRun?.id, 60_000);
  return waitForExecuting(sys.call, runId, 60_000);
};
const node = (sys: TestSystem) => ({ kind: 'node', node: sys.nodeId });

/** A template type, a failing type and a template to build, made once for the build scenarios. */
let buildSetup: Promise<{ build(type: 'ok' | 'bad', files: Record<string, string>): Promise<string> }> | undefined;
function builds(sys: TestSystem) {
  return (buildSetup ??= (async () => {
    const typeName = uniqueName('shell');
    const base = await pushImageTo(env('GG_TEST_REGISTRY'), images.shellType);
    for (const [name, image] of [[typeName, base], [`${typeName}-x`, `${env('GG_TEST_REGISTRY')}/glider-gun/no-such-base:1`]] as const) {
      assert.equal((await sys.call('POST', '/v1/template-types', { name })).status, 201);
      assert.equal((await sys.call('POST', `/v1/template-types/${name}/versions`, { image })).status, 201);
    }
    const template = uniqueName('built');
    assert.equal((await sys.call('POST', '/v1/templates', { name: template })).status, 201);
    return {
      async build(type: 'ok' | 'bad', files: Record<string, string>) {
        const res = await fetch(`${sys.api.url}/v1/template-sources`, {
          method: 'POST',
          body: await tgzOf(files),
          headers: { authorization: `Bearer ${sys.tokens.admin}`, 'content-type': 'application/gzip' },
        });
        const sourceId = ((await res.json()) as { id: string }).id;
        const b = await sys.call<{ id: string }>('POST', `/v1/templates/${template}/builds`, {
          type: { name: type === 'ok' ? typeName : `${typeName}-x`, version: 1 },
          source: { kind: 'upload', sourceId },
        });
        assert.equal(b.status, 202, JSON.stringify(b.body));
        return b.body.id;
      },
    };
  })());
}
const buildEnded = async (sys: TestSystem, id: string, status: string) => {
  const b = await eventually(`build ${id} to end`, async () => {
    const r = await sys.call<{ status: string }>('GET', `/v1/builds/${id}`);
    return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
  }, 180_000);
  assert.equal(b.status, status, `build ${id}: ${JSON.stringify(b)}`);
  await eventually('the build workflow to close', async () =>
    ((await sys.client.workflow.getHandle(buildWorkflowId(id)).describe()).status.name !== 'RUNNING' ? true : undefined));
  return { sys, workflowId: buildWorkflowId(id) };
};

const SCENARIOS: Scenario[] = [
  {
    name: 'deploy-then-destroy-with-secret',
    async record(ctx) {
      const sys = await ctx.system();
      const template = await registerExampleTemplate(sys.call, {
        parameters: [...EXAMPLE_PARAMETERS, { name: 'password', type: 'string', sensitive: true, default: 'not-a-real-secret' }],
      });
      const id = await createDeployment(sys.call, template, { message: 'ok' }, node(sys));
      await ended(sys, await startRun(sys, id), 'succeeded');
      await ended(sys, await startRun(sys, id, 'destroy'), 'succeeded');
      return { sys, workflowId: deploymentWorkflowId(id) };
    },
  },
  {
    // After `grant-from-node-api`: the node takes its grant (and the sealed secrets) from the node API.
    name: 'granted-deploy-then-destroy-with-secret',
    async record(ctx) {
      const sys = await ctx.system();
      const template = await registerExampleTemplate(sys.call, {
        parameters: [...EXAMPLE_PARAMETERS, { name: 'password', type: 'string', sensitive: true, default: 'not-a-real-secret' }],
      });
      const id = await createDeployment(sys.call, template, { message: 'ok' }, node(sys));
      await ended(sys, await startRun(sys, id), 'succeeded');
      await ended(sys, await startRun(sys, id, 'destroy'), 'succeeded');
      return { sys, workflowId: deploymentWorkflowId(id) };
    },
  },
  {
    // The node took the run, went away past the node wait, and came back: the run waited and succeeded.
    name: 'node-away-then-back',
    async record(ctx) {
      const sys = await ctx.own({ env: { GLIDERGUN_NODE_WAIT_SECONDS: '3' } });
      const id = await createDeployment(sys.call, await registerExampleTemplate(sys.call), { message: 'away', sleep_seconds: 20 }, node(sys));
      const run = await startRun(sys, id);
      await executing(sys, id);
      await sys.stopNodeWorker();
      await new Promise((resolve) => setTimeout(resolve, 12_000));
      await sys.startNodeWorker();
      await ended(sys, run, 'succeeded');
      return { sys, workflowId: deploymentWorkflowId(id) };
    },
  },
  {
    // Its node revoked while the run waited for it: failed as node-revoked, no cleanup waited for.
    name: 'node-revoked',
    async record(ctx) {
      const sys = await ctx.own({ nodeWorker: false, env: { GLIDERGUN_NODE_WAIT_SECONDS: '600' } });
      const id = await createDeployment(sys.call, await registerExampleTemplate(sys.call), { message: 'x' }, node(sys));
      const run = await startRun(sys, id);
      await eventually('the run to wait for its node', async () => ((await sys.call<{ status: string }>('GET', `/v1/runs/${run}`)).body.status === 'running' ? true : undefined));
      assert.equal((await sys.call('POST', `/v1/nodes/${sys.nodeId}/revoke`)).status, 200);
      await ended(sys, run, 'failed', 'node-revoked');
      return { sys, workflowId: deploymentWorkflowId(id) };
    },
  },
  {
    name: 'failed-run',
    async record(ctx) {
      const sys = await ctx.system();
      const id = await createDeployment(sys.call, await registerExampleTemplate(sys.call), { message: 'bad', exit_code: 2 }, node(sys));
      await ended(sys, await startRun(sys, id), 'failed', 'exit-code');
      return { sys, workflowId: deploymentWorkflowId(id) };
    },
  },
  {
    name: 'run-cancelled-by-signal',
    async record(ctx) {
      const sys = await ctx.system();
      const id = await createDeployment(sys.call, await registerExampleTemplate(sys.call), { message: 'slow', sleep_seconds: 60 }, node(sys));
      const run = await startRun(sys, id);
      await executing(sys, id);
      await sys.client.workflow.getHandle(deploymentWorkflowId(id)).signal(cancelSignal, { runId: run });
      await ended(sys, run, 'cancelled');
      return { sys, workflowId: deploymentWorkflowId(id) };
    },
  },
  {
    name: 'workflow-cancelled',
    async record(ctx) {
      const sys = await ctx.system();
      const id = await createDeployment(sys.call, await registerExampleTemplate(sys.call), { message: 'slow', sleep_seconds: 60 }, node(sys));
      const run = await startRun(sys, id);
      await executing(sys, id);
      const handle = sys.client.workflow.getHandle(deploymentWorkflowId(id));
      await handle.cancel();
      await ended(sys, run, 'cancelled');
      await eventually('the workflow to close', async () => ((await handle.describe()).status.name === 'CANCELLED' ? true : undefined));
      return { sys, workflowId: deploymentWorkflowId(id) };
    },
  },
  {
    name: 'build-succeeded',
    needsCluster: true,
    async record(ctx) {
      const sys = await ctx.system();
      return buildEnded(sys, await (await builds(sys)).build('ok', { 'main.sh': 'echo hi' }), 'succeeded');
    },
  },
  {
    name: 'build-failed',
    needsCluster: true,
    async record(ctx) {
      const sys = await ctx.system();
      return buildEnded(sys, await (await builds(sys)).build('bad', { 'main.sh': 'echo hi' }), 'failed');
    },
  },
  {
    name: 'build-cancelled',
    needsCluster: true,
    async record(ctx) {
      const sys = await ctx.system();
      // Large enough that the build is still running when the cancel arrives.
      const big = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`blob-${i}`, `${i}`.repeat(2_000_000)]));
      const id = await (await builds(sys)).build('ok', { 'main.sh': 'echo hi', ...big });
      await eventually('the build to run', async () => ((await sys.call<{ status: string }>('GET', `/v1/builds/${id}`)).body.status === 'running' ? true : undefined));
      assert.equal((await sys.call('POST', `/v1/builds/${id}/cancel`)).status, 202);
      return buildEnded(sys, id, 'cancelled');
    },
  },
  {
    // One run, then the idle workflow continues as new (the threshold set low, as the API never does): the
    // first execution, which ends in WorkflowExecutionContinuedAsNew.
    name: 'continued-as-new',
    async record(ctx) {
      const sys = await ctx.system();
      const template = await registerExampleTemplate(sys.call);
      const id = await createDeployment(sys.call, template, { message: 'again' }, node(sys));
      const first = await sys.client.workflow.start('deploymentWorkflow', {
        workflowId: deploymentWorkflowId(id),
        taskQueue: sys.config.temporal.taskQueue,
        args: [{ deploymentId: id, template, target: node(sys), clusterTaskQueue: sys.config.temporal.taskQueue, status: 'new', pending: [], continueAsNewAfterEvents: 10 }],
      });
      const run = await ended(sys, await startRun(sys, id), 'succeeded');
      await eventually('the first execution to continue as new', async () => {
        const d = await sys.client.workflow.getHandle(deploymentWorkflowId(id), first.firstExecutionRunId).describe();
        return d.status.name === 'CONTINUED_AS_NEW' ? true : undefined;
      });
      const carried = await sys.client.workflow.getHandle(deploymentWorkflowId(id)).query(statusQuery);
      assert.equal(carried.lastRun?.id, run.id, 'the new execution carried the state over');
      return { sys, workflowId: deploymentWorkflowId(id), runId: first.firstExecutionRunId };
    },
  },
  {
    // No worker polls the node's task queue: executeRun's schedule-to-start timeout ends the run.
    name: 'node-unavailable',
    async record(ctx) {
      const sys = await ctx.own({ nodeWorker: false, env: { GLIDERGUN_NODE_WAIT_SECONDS: '2' } });
      const id = await createDeployment(sys.call, await registerExampleTemplate(sys.call), { message: 'x' }, node(sys));
      await ended(sys, await startRun(sys, id), 'failed', 'node-unavailable');
      return { sys, workflowId: deploymentWorkflowId(id) };
    },
  },
  {
    name: 'run-timeout',
    async record(ctx) {
      const sys = await ctx.system();
      const template = await registerExampleTemplate(sys.call);
      const d = await sys.call<{ id: string }>('POST', '/v1/deployments', {
        template: { name: template },
        parameters: { message: 'slow', sleep_seconds: 120 },
        target: node(sys),
        limits: { timeoutSeconds: 2 },
      });
      assert.equal(d.status, 201, JSON.stringify(d.body));
      await ended(sys, await startRun(sys, d.body.id), 'failed', 'timeout');
      return { sys, workflowId: deploymentWorkflowId(d.body.id) };
    },
  },
  {
    // A run being cancelled whose workflow was terminated: the reconciler hands it to a new execution, whose
    // startRun answers the spec with cancelNow (resumed only to stop it): adopted, stopped, archived, cancelled.
    name: 'resume-to-cancel',
    async record(ctx) {
      const sys = await ctx.system();
      const id = await createDeployment(sys.call, await registerExampleTemplate(sys.call), { message: 'orphan', sleep_seconds: 120 }, node(sys));
      const run = await startRun(sys, id);
      await executing(sys, id);
      await eventually('the container to run', async () => (await sys.docker.listContainers({ filters: { label: [`io.glider-gun.run=${run}`] } }))[0], 60_000);
      const terminated = sys.client.workflow.getHandle(deploymentWorkflowId(id));
      const { runId: before } = await terminated.describe();
      await terminated.terminate('record-histories: the workflow is gone while its run is being cancelled');
      assert.equal((await sys.call('POST', `/v1/runs/${run}/cancel`)).status, 202);
      const handed = await reconcileRuns({ db: sys.db, temporal: sys.client, taskQueue: sys.config.temporal.taskQueue }, 0);
      assert.ok(handed.includes(run), `the reconciler handed over ${JSON.stringify(handed)}, not ${run}`);
      const done = await ended(sys, run, 'cancelled');
      assert.equal(done.stateVersion, 1, 'its state was archived');
      const { runId: resumed } = await sys.client.workflow.getHandle(deploymentWorkflowId(id)).describe();
      assert.notEqual(resumed, before, 'a new execution resumed the run');
      return { sys, workflowId: deploymentWorkflowId(id), runId: resumed };
    },
  },
  {
    // A run as a Kubernetes Job, executed by the cluster worker (the cluster's task queue, not a node's).
    name: 'cluster-run',
    needsCluster: true,
    async record(ctx) {
      const sys = await ctx.own({ nodeWorker: false, env: await kubernetesEnv() });
      const template = await registerExampleTemplate(sys.call, { image: env('GG_TEST_K8S_IMAGE_EXAMPLE') });
      const id = await createDeployment(sys.call, template, { message: 'on the cluster' }, { kind: 'cluster' });
      const run: RunBody = await ended(sys, await startRun(sys, id), 'succeeded');
      assert.equal(run.stateVersion, 1);
      return { sys, workflowId: deploymentWorkflowId(id) };
    },
  },
];

const fileOf = (name: string) => path.join(HISTORIES, `${name}.json`);
const exists = (file: string) => access(file).then(() => true, () => false);

/** The CLI's JSON is the format the SDK's replayer reads (and what an operator would attach to a bug report). */
async function historyJson(recorded: Recorded): Promise<string> {
  const { stdout } = await promisify(execFile)(
    env('GG_TEST_TEMPORAL_CLI'),
    [
      'workflow', 'show',
      '--workflow-id', recorded.workflowId,
      ...(recorded.runId ? ['--run-id', recorded.runId] : []),
      '--address', env('GG_TEST_TEMPORAL_ADDRESS'),
      '--output', 'json',
    ],
    { maxBuffer: 64 * 1024 * 1024 },
  );
  return stdout;
}

async function main(): Promise<number> {
  const named = process.argv.slice(2);
  const unknown = named.filter((n) => !SCENARIOS.some((s) => s.name === n));
  if (unknown.length) {
    say(`no such scenario: ${unknown.join(', ')} (known: ${SCENARIOS.map((s) => s.name).join(', ')})`);
    return 1;
  }
  const wanted = SCENARIOS.filter((s) => named.length === 0 || named.includes(s.name));
  const missing: Scenario[] = [];
  for (const s of wanted) {
    if (await exists(fileOf(s.name))) say(`skipped ${s.name}.json: it exists (recorded histories are never overwritten)`);
    else missing.push(s);
  }
  const clusterWanted = process.env.GG_TEST_KUBERNETES !== '0';
  const toRecord = missing.filter((s) => clusterWanted || !s.needsCluster);
  for (const s of missing.filter((m) => !toRecord.includes(m))) say(`not recorded ${s.name}.json: it needs the Kubernetes test cluster (GG_TEST_KUBERNETES=0)`);
  if (toRecord.length === 0) {
    say('nothing to record');
    return 0;
  }

  let services: TestServices | undefined;
  const systems: TestSystem[] = [];
  let shared: Promise<TestSystem> | undefined;
  const stopAll = async () => {
    for (const s of systems.splice(0)) await s.stop().catch((err: unknown) => say(`stopping a system: ${String(err)}`));
    await services?.stop();
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      say(`${signal}: stopping the services`);
      void stopAll().finally(() => process.exit(130));
    });
  }
  const written: string[] = [];
  const failed: string[] = [];
  try {
    services = await startTestServices('rec', { kubernetes: toRecord.some((s) => s.needsCluster) });
    Object.assign(process.env, services.env);
    const own = async (opts: Parameters<typeof startTestSystem>[0]) => {
      const sys = await startTestSystem(opts);
      systems.push(sys);
      return sys;
    };
    const ctx: Context = {
      system: () => (shared ??= own({ builder: Boolean(process.env.GG_TEST_REGISTRY) })),
      own,
    };
    for (const s of toRecord) {
      const started = Date.now();
      say(`recording ${s.name} ...`);
      try {
        const recorded = await s.record(ctx);
        // The whole scenario: an open workflow is saved once idle (a node-unavailable run's cleanup waits out its own timeout).
        const handle = recorded.sys.client.workflow.getHandle(recorded.workflowId, recorded.runId);
        await eventually('the workflow to settle', async () => {
          const d = await handle.describe();
          return d.status.name !== 'RUNNING' || (d.raw.pendingActivities?.length ?? 0) === 0 ? true : undefined;
        }, 60_000);
        const json = await historyJson(recorded);
        const replayed = await Worker.runReplayHistory({ workflowBundle: { codePath: env('GG_TEST_WORKFLOW_BUNDLE') } }, JSON.parse(json) as unknown, s.name)
          .then(() => undefined, (err: unknown) => (err instanceof Error ? err.message : 'an error'));
        if (replayed) throw new Error(`it does not replay on the code that recorded it: ${replayed}`);
        // 'wx': fails rather than overwrite a file that appeared meanwhile.
        await writeFile(fileOf(s.name), json, { flag: 'wx' });
        written.push(s.name);
        say(`wrote ${path.relative(process.cwd(), fileOf(s.name))} (${((Date.now() - started) / 1000).toFixed(0)}s)`);
      } catch (err) {
        failed.push(s.name);
        say(`FAILED to record ${s.name}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
      }
    }
  } catch (err) {
    say(`set-up failed: ${err instanceof Error ? err.message : String(err)}`);
    failed.push('(set-up)');
  } finally {
    await stopAll();
  }
  say(`recorded ${written.length} (${written.join(', ') || 'none'}), ${failed.length} failed${failed.length ? ` (${failed.join(', ')})` : ''}`);
  if (written.length) say('replay them (npm run test:only -- test/replay) and commit them: they are append-only from then on');
  return failed.length ? 1 : 0;
}

// Workers and connections are closed by stopAll; exit in any case rather than hang on a stray handle.
process.exit(await main());
