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
import { cancelSignal, deploymentWorkflowId, statusQuery } from '../../workflows/messages.js';
import { EXAMPLE_PARAMETERS, createDeployment, registerExampleTemplate } from '../support/fixtures.js';
import { env, eventually, startTestSystem, type TestSystem } from '../support/system.js';

const recording = process.env.GG_RECORD_HISTORIES === '1';

describe('recording workflow histories', { skip: !recording && 'set GG_RECORD_HISTORIES=1 to record' }, () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem();
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
  const save = async (name: string, deploymentId: string) => {
    const { stdout } = await promisify(execFile)(
      env('GG_TEST_TEMPORAL_CLI'),
      ['workflow', 'show', '--workflow-id', deploymentWorkflowId(deploymentId), '--address', sys.config.temporal.address, '--output', 'json'],
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
});
