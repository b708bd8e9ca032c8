import { createHash, randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ApplicationFailure } from '@temporalio/common';
import { RUN_LABEL, containerName, type ExecutionContext } from '../../activities/execution/adapter.js';
import { DockerExecutor } from '../../activities/execution/docker.js';
import { installRunner } from '../../activities/execution/docker-images.js';
import { createRunActivities } from '../../activities/runs.js';
import { postgresRunAgents } from '../../activities/storage/postgres-run-agents.js';
import { SecretBox } from '../../core/crypto.js';
import { readLogChunks } from '../../core/db/logs.js';
import { insertRun } from '../../core/db/runs.js';
import type { RunSpec } from '../../core/domain.js';
import { newId } from '../../core/ids.js';
import { loadEncryptionKey } from '../../core/keys.js';
import { RegistryCredentials } from '../../core/registry-credentials.js';
import { createDeployment, registerBlobTemplate, registerExampleTemplate } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { env, eventually, SECRETS_ROOT, startTestSystem, type TestSystem } from '../support/system.js';

/**
 * The Docker adapter alone, against the real engine and the real agent API (no node worker: the test is the
 * worker): adoption, timeouts, cancel and lost containers.
 */
describe('DockerExecutor', () => {
  let sys: TestSystem;
  let executor: DockerExecutor;
  let runs: ReturnType<typeof createRunActivities>;
  const templates: Record<'example' | 'trap' | 'stubborn', string> = { example: '', trap: '', stubborn: '' };
  const runIds: string[] = [];

  /** A run of a new deployment of `template`, started as its workflow would start it: its spec. */
  const spec = async (template: keyof typeof templates, overrides: Partial<RunSpec> = {}): Promise<RunSpec> => {
    const parameters = template === 'example' ? { message: 'hi', ...(overrides.parameters ?? {}) } : { mib: 0 };
    const deploymentId = await createDeployment(sys.call, templates[template], parameters, { kind: 'node', node: sys.nodeId });
    const run = await insertRun(sys.db, { id: newId('run'), deploymentId, action: 'deploy', requestedBy: 'test' });
    runIds.push(run.id);
    const started = await runs.startRun(run.id);
    assert.ok(started.spec, 'the run started');
    return { ...started.spec, ...overrides, env: { ...started.spec.env, ...(overrides.env ?? {}) } };
  };
  const context = (signal = new AbortController().signal): ExecutionContext => ({ signal, heartbeat: () => undefined, log: () => undefined });
  const containersOf = (runId: string) => sys.docker.listContainers({ all: true, filters: { label: [`${RUN_LABEL}=${runId}`] } });
  const running = (runId: string) =>
    eventually(`container of ${runId} running`, async () => {
      const [c] = await containersOf(runId);
      return c?.State === 'running' ? c : undefined;
    });
  const stdout = async (runId: string) =>
    Buffer.concat((await readLogChunks(sys.db, runId, { limit: 10_000, stream: 'stdout' })).map((c) => c.data)).toString();

  before(async () => {
    sys = await startTestSystem({ nodeWorker: false });
    const box = new SecretBox(await loadEncryptionKey({ base64: sys.config.security.encryptionKey, file: sys.config.security.encryptionKeyFile }));
    runs = createRunActivities({ db: sys.db, runs: sys.config.runs, secrets: box });
    const credentialKey = randomBytes(16).toString('hex');
    // The runner's calls go through the gateway with the built-in node's certificate, as on any node.
    const identity = await sys.nodeIdentity();
    const runner = await installRunner(sys.docker, env('GG_TEST_NODE_RUNNER_IMAGE'), path.join(env('GG_TEST_SCRATCH'), `executor-bin-${process.pid}`), new RegistryCredentials(), () => undefined);
    executor = new DockerExecutor(
      sys.docker,
      path.join(env('GG_TEST_SCRATCH'), `executor-${process.pid}`),
      path.join(SECRETS_ROOT, `executor-${process.pid}`),
      runner,
      `https://${sys.gatewayAddress}`,
      postgresRunAgents(sys.db),
      (runId) => `ggr_${createHash('sha256').update(`${credentialKey}:${runId}`).digest('base64url')}`,
      new RegistryCredentials(),
      () => ({ ca: identity.caPem, cert: identity.certPem, key: identity.keyPem }),
    );
    templates.example = await registerExampleTemplate(sys.call);
    // A template whose main process and a background child both trap SIGTERM and record it.
    const trapImage = await scriptImage(
      sys.docker,
      `#!/bin/sh
(trap 'echo child >> /state/signals; exit 0' TERM; while true; do sleep 0.1; done) &
trap 'echo main >> /state/signals; wait; exit 143' TERM
echo started > /state/started
while true; do sleep 0.1; done
`,
    );
    // A template that ignores SIGTERM (and so do its children, which inherit the disposition).
    const stubbornImage = await scriptImage(sys.docker, `#!/bin/sh\ntrap '' TERM\necho started > /state/started\nwhile true; do sleep 0.1; done\n`);
    templates.trap = await registerBlobTemplate(sys.call, 'trap', trapImage);
    templates.stubborn = await registerBlobTemplate(sys.call, 'stubborn', stubbornImage);
  });

  after(async () => {
    for (const runId of runIds) await executor.cleanup(runId);
    await sys.stop();
  });

  it('adopts the container of an earlier attempt instead of starting a twin', async () => {
    const s = await spec('example', { env: { TF_VAR_sleep_seconds: '2' } });
    const first = executor.execute(s, {}, context());
    await running(s.runId);
    const second = executor.execute(s, {}, context());
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.status, 'succeeded');
    assert.deepEqual(b, a);
    assert.equal((await containersOf(s.runId)).length, 1);
    // The template ran once: its own run counter in /state says so.
    assert.equal(a.outputs?.runCount, 1);
    // A third attempt after the end adopts the exited container and reports the same result without rerunning.
    assert.deepEqual(await executor.execute(s, {}, context()), a);
    // The runner stored the log once, whatever the attempts did.
    const out = await stdout(s.runId);
    assert.equal(out.split('example template: action=deploy').length, 2, out);
  });

  it('on cancel, sends SIGTERM to the whole process tree and reports cancelled', async () => {
    // A long grace, so that "before the grace ran out" is an ordering a loaded machine cannot blur.
    const graceSeconds = 30;
    const s = await spec('trap', { stopGraceSeconds: graceSeconds });
    const abort = new AbortController();
    const outcome = executor.execute(s, {}, context(abort.signal));
    await running(s.runId);
    await eventually('the template to start', () => Promise.resolve(existsSync(path.join(executor.runDir(s.runId), 'state', 'started')) ? true : undefined));
    const t0 = Date.now();
    abort.abort();
    const result = await outcome;
    const elapsed = Date.now() - t0;
    assert.equal(result.status, 'cancelled');
    // The main process's trap ends it with 143 once its child has gone; a SIGKILL after the grace would be 137.
    assert.equal(result.exitCode, 143, 'the tree ended on its SIGTERM, not killed');
    assert.ok(elapsed < graceSeconds * 1000, `stopped ${elapsed} ms after the cancel: before the ${graceSeconds} s grace ran out`);
    const signals = (await readFile(path.join(executor.runDir(s.runId), 'state', 'signals'), 'utf8')).split('\n').filter(Boolean).sort();
    assert.deepEqual(signals, ['child', 'main']);
  });

  // The test's own timeout ends a run whose timeout or SIGKILL is never enforced, in a minute rather than five.
  it('ends a run that exceeds its timeout as failed/timeout, killing a template that ignores SIGTERM after the grace', { timeout: 60_000 }, async () => {
    const timeoutSeconds = 1;
    const graceSeconds = 3;
    const s = await spec('stubborn', { timeoutSeconds, stopGraceSeconds: graceSeconds });
    const result = await executor.execute(s, {}, context());
    assert.equal(result.status, 'failed');
    assert.equal(result.reason, 'timeout');
    assert.equal(result.exitCode, 137, 'killed by SIGKILL');
    // The container's life by the engine's own clock (the deadline counts from its start): never shorter than
    // the timeout plus the grace; a loaded machine makes it only longer, so the upper bound is generous (20 s
    // over), and still well below what a grace taken ten times over, or a kill that never comes, would give.
    const [c] = await containersOf(s.runId);
    assert.ok(c, 'the container is kept until cleanup');
    assert.equal(c.State, 'exited');
    const state = (await sys.docker.getContainer(c.Id).inspect()).State;
    const life = Date.parse(state.FinishedAt) - Date.parse(state.StartedAt);
    const least = (timeoutSeconds + graceSeconds) * 1000;
    assert.ok(life >= least - 5, `the container lived ${life} ms: at least the timeout plus the grace (${least} ms)`);
    assert.ok(life < least + 20_000, `the container lived ${life} ms: the timeout plus the grace (${least} ms), with 20 s for a loaded machine`);
  });

  it('reports a container that vanished after it started, rather than starting the run again', async () => {
    const s = await spec('stubborn');
    const first = executor.execute(s, {}, context());
    await running(s.runId);
    await sys.docker.getContainer(containerName(s.runId)).remove({ force: true });
    // The attempt that was watching sees the container die or disappear; either way it ends.
    const seen = await first.then((o) => o.status, () => 'rejected');
    assert.ok(['failed', 'rejected'].includes(seen), seen);
    // A later attempt (a retry after a worker crash) must not start the run a second time.
    await assert.rejects(executor.execute(s, {}, context()), (err: unknown) => {
      assert.ok(err instanceof ApplicationFailure);
      assert.equal(err.type, 'container-vanished');
      assert.equal(err.nonRetryable, true);
      return true;
    });
    assert.equal((await containersOf(s.runId)).length, 0);
  });

  it('cleans up the container and the run folder, and cleaning twice is harmless', async () => {
    const s = await spec('example');
    await executor.execute(s, {}, context());
    await executor.cleanup(s.runId);
    await executor.cleanup(s.runId);
    assert.equal((await containersOf(s.runId)).length, 0);
    assert.equal(existsSync(executor.runDir(s.runId)), false);
  });
});
