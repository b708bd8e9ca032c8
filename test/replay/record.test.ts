/**
 * Records the histories that test/replay/replay.test.ts replays. Run it when a workflow change is meant to
 * be compatible and new scenarios should be covered (it does nothing otherwise):
 *   GG_RECORD_HISTORIES=1 npm run test:only -- test/replay/record.test.ts
 * Never re-record to make a failing replay pass: that failure means running workflows would break.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { pushImageTo } from '../../infra/dev/kubernetes.js';
import { buildWorkflowId } from '../../workflows/build.js';
import { cancelSignal, deploymentWorkflowId, statusQuery } from '../../workflows/messages.js';
import { tgzOf } from '../support/archives.js';
import { EXAMPLE_PARAMETERS, createDeployment, registerExampleTemplate, uniqueName } from '../support/fixtures.js';
import { env, eventually, images, startTestSystem, type TestSystem } from '../support/system.js';

const recording = process.env.GG_RECORD_HISTORIES === '1';

describe('recording workflow histories', { skip: !recording && 'set GG_RECORD_HISTORIES=1 to record' }, () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem({ builder: true });
  });
  after(async () => {
    await sys.stop();
  });

  const endOf = (runId: string) =>
    eventually(`run ${runId} to end`, async () => {
      const r = await sys.call<{ status: string }>('GET', `/v1/runs/${runId}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    }, 60_000);
  const startRun = async (id: string, action = 'deploy') => (await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action })).body.id;
  // The CLI's JSON is the format the SDK's replayer reads (and what an operator would attach to a bug report).
  const save = async (name: string, deploymentId: string, workflowId = deploymentWorkflowId(deploymentId)) => {
    const { stdout } = await promisify(execFile)(
      env('GG_TEST_TEMPORAL_CLI'),
      ['workflow', 'show', '--workflow-id', workflowId, '--address', sys.config.temporal.address, '--output', 'json'],
      { maxBuffer: 64 * 1024 * 1024 },
    );
    await writeFile(path.join(import.meta.dirname, 'histories', `${name}.json`), stdout);
  };

  it('records: runs that succeed, fail, get cancelled, carry secrets; a cancelled workflow', async () => {
    const template = await registerExampleTemplate(sys.call, {
      parameters: [...EXAMPLE_PARAMETERS, { name: 'password', type: 'string', sensitive: true, default: 'not-a-real-secret' }],
    });
    const node = { kind: 'node', node: sys.nodeId };

    const a = await createDeployment(sys.call, template, { message: 'ok' }, node);
    await endOf(await startRun(a));
    await endOf(await startRun(a, 'destroy'));
    await save('deploy-then-destroy-with-secret', a);

    const b = await createDeployment(sys.call, template, { message: 'bad', exit_code: 2 }, node);
    await endOf(await startRun(b));
    await save('failed-run', b);

    const c = await createDeployment(sys.call, template, { message: 'slow', sleep_seconds: 30 }, node);
    const runC = await startRun(c);
    const handleC = sys.client.workflow.getHandle(deploymentWorkflowId(c));
    await eventually('executing', async () => ((await handleC.query(statusQuery)).activeRun?.phase === 'executing' ? true : undefined));
    await handleC.signal(cancelSignal, { runId: runC });
    await endOf(runC);
    await save('run-cancelled-by-signal', c);

    const d = await createDeployment(sys.call, template, { message: 'slow', sleep_seconds: 30 }, node);
    const runD = await startRun(d);
    const handleD = sys.client.workflow.getHandle(deploymentWorkflowId(d));
    await eventually('executing', async () => ((await handleD.query(statusQuery)).activeRun?.phase === 'executing' ? true : undefined));
    await handleD.cancel();
    await endOf(runD);
    await eventually('closed', async () => ((await handleD.describe()).status.name === 'CANCELLED' ? true : undefined));
    await save('workflow-cancelled', d);
  });

  it('records template builds: one that succeeds, one that fails, one cancelled', async () => {
    const base = await pushImageTo(env('GG_TEST_REGISTRY'), images.shellType);
    const typeName = uniqueName('shell');
    await sys.call('POST', '/v1/template-types', { name: typeName });
    await sys.call('POST', `/v1/template-types/${typeName}/versions`, { image: base });
    await sys.call('POST', '/v1/template-types', { name: `${typeName}-x` });
    await sys.call('POST', `/v1/template-types/${typeName}-x/versions`, { image: `${env('GG_TEST_REGISTRY')}/glider-gun/no-such-base:1` });
    const template = uniqueName('built');
    await sys.call('POST', '/v1/templates', { name: template });
    const upload = async (files: Record<string, string>) => {
      const res = await fetch(`${sys.api.url}/v1/template-sources`, {
        method: 'POST',
        body: await tgzOf(files),
        headers: { authorization: `Bearer ${sys.tokens.admin}`, 'content-type': 'application/gzip' },
      });
      return ((await res.json()) as { id: string }).id;
    };
    const build = async (type: string, sourceId: string) =>
      (await sys.call<{ id: string }>('POST', `/v1/templates/${template}/builds`, { type: { name: type, version: 1 }, source: { kind: 'upload', sourceId } })).body.id;
    const ended = (id: string) =>
      eventually(`build ${id} to end`, async () => {
        const b = await sys.call<{ status: string }>('GET', `/v1/builds/${id}`);
        return ['succeeded', 'failed', 'cancelled'].includes(b.body.status) ? true : undefined;
      }, 120_000);
    const small = await upload({ 'main.sh': 'echo hi' });

    const ok = await build(typeName, small);
    await ended(ok);
    await save('build-succeeded', '', buildWorkflowId(ok));
    const bad = await build(`${typeName}-x`, small);
    await ended(bad);
    await save('build-failed', '', buildWorkflowId(bad));
    const big = await upload({ 'main.sh': 'echo hi', ...Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`blob-${i}`, `${i}`.repeat(2_000_000)])) });
    const cancelled = await build(typeName, big);
    await eventually('running', async () => ((await sys.call<{ status: string }>('GET', `/v1/builds/${cancelled}`)).body.status === 'running' ? true : undefined));
    await sys.call('POST', `/v1/builds/${cancelled}/cancel`);
    await ended(cancelled);
    await eventually('closed', async () => ((await sys.client.workflow.getHandle(buildWorkflowId(cancelled)).describe()).status.name !== 'RUNNING' ? true : undefined));
    await save('build-cancelled', '', buildWorkflowId(cancelled));
  });
});

