/**
 * The agent API that a run's pod-runner calls back (api/agent/routes.ts), against the real database: the
 * per-run credential, log bytes stored exactly once at their offsets, the state archive both ways, the report.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { grantRunAgent, getAgentResult, runAgentStarted } from '../../core/db/run-agents.js';
import { createDeployment, registerExampleTemplate } from '../support/fixtures.js';
import { eventually, startTestSystem, type TestSystem } from '../support/system.js';

describe('the agent API', () => {
  let sys: TestSystem;
  let deploymentId: string;
  let runId: string;
  const credential = 'ggr_test-credential-0123456789';

  const agent = (method: string, path: string, body?: Buffer | string, headers: Record<string, string> = {}, token = credential) =>
    fetch(`${sys.api.url}${path}`, { method, body, headers: { authorization: `Bearer ${token}`, ...headers } });
  const putLog = (stream: string, offset: number, data: string) =>
    agent('PUT', `/v1/agent/runs/${runId}/logs?stream=${encodeURIComponent(stream)}&offset=${offset}`, Buffer.from(data), {
      'content-type': 'application/octet-stream',
    });

  before(async () => {
    // No node worker: the run stays pending, which is an active run whose agent may call in.
    sys = await startTestSystem({ nodeWorker: false, env: { GLIDERGUN_LOG_MAX_BYTES: '2048' } });
    const template = await registerExampleTemplate(sys.call);
    deploymentId = await createDeployment(sys.call, template, { message: 'agent' }, { kind: 'node', node: sys.nodeId });
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
    runId = run.body.id;
    await grantRunAgent(sys.db, { runId, deploymentId, restoreVersion: undefined, credential });
  });
  after(async () => {
    await sys.stop();
  });

  it('refuses a call without the run\'s credential, or with another run\'s', async () => {
    const none = await fetch(`${sys.api.url}/v1/agent/runs/${runId}/state`);
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as { code: string }).code, 'UNAUTHENTICATED');
    assert.equal((await agent('GET', `/v1/agent/runs/${runId}/state`, undefined, {}, 'ggr_wrong')).status, 401);
    assert.equal((await agent('GET', '/v1/agent/runs/run-000000000000/state')).status, 401, 'a credential is valid for its own run only');
    // An operator token is no run credential either.
    assert.equal((await agent('GET', `/v1/agent/runs/${runId}/state`, undefined, {}, sys.tokens.admin)).status, 401);
  });

  it('answers 204 when there is no state to restore, and marks that the runner called in', async () => {
    assert.equal(await runAgentStarted(sys.db, runId), false);
    const res = await agent('GET', `/v1/agent/runs/${runId}/state`);
    assert.equal(res.status, 204);
    assert.equal(await runAgentStarted(sys.db, runId), true);
  });

  it('stores log bytes once at their offsets: a repeat is skipped, an overlap trimmed, a gap refused', async () => {
    assert.equal((await putLog('stdout', 0, 'hello ')).status, 204);
    assert.equal((await putLog('stdout', 0, 'hello ')).status, 204, 'a retried upload is harmless');
    assert.equal((await putLog('stdout', 3, 'lo world\n')).status, 204, 'an overlapping upload stores only what is new');
    const gap = await putLog('stdout', 100, 'x');
    assert.equal(gap.status, 409);
    const body = (await gap.json()) as { code: string; storedBytes: number };
    assert.equal(body.code, 'LOG_OFFSET_MISMATCH');
    assert.equal(body.storedBytes, 'hello world\n'.length);
    assert.equal((await putLog('file:history.log', 0, 'a file\n')).status, 204);
    assert.equal((await putLog('../etc/passwd', 0, 'x')).status, 400);
    assert.equal((await putLog('stderr', 0, 'x'.repeat(4096))).status, 413, 'past the cap');
    const log = await fetch(`${sys.api.url}/v1/runs/${runId}/logs?stream=stdout`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } });
    assert.equal(await log.text(), 'hello world\n');
  });

  it('stores the uploaded state archive as the next version and serves it to the next run', async () => {
    const archive = gzipSync(Buffer.from('not really a tar, but bytes are bytes'));
    const refused = await agent('PUT', `/v1/agent/runs/${runId}/state`, archive, { 'content-type': 'application/json' });
    assert.equal(refused.status, 415);
    const put = await agent('PUT', `/v1/agent/runs/${runId}/state`, archive, { 'content-type': 'application/gzip' });
    assert.equal(put.status, 200);
    const written = (await put.json()) as { version: number; sha256: string; sizeBytes: number };
    assert.equal(written.sha256, createHash('sha256').update(archive).digest('hex'));
    const again = await agent('PUT', `/v1/agent/runs/${runId}/state`, archive, { 'content-type': 'application/gzip' });
    assert.equal(((await again.json()) as { version: number }).version, written.version, 'idempotent per run');

    await grantRunAgent(sys.db, { runId, deploymentId, restoreVersion: written.version, credential });
    const get = await agent('GET', `/v1/agent/runs/${runId}/state`);
    assert.equal(get.status, 200);
    assert.equal(get.headers.get('content-type'), 'application/gzip');
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), archive);
  });

  it('parses outputs.json as the Docker adapter does: a bad file is a warning, never a failure', async () => {
    const other = await sys.call<{ id: string }>('POST', '/v1/deployments', {
      template: { name: (await sys.call<{ template: { name: string } }>('GET', `/v1/deployments/${deploymentId}`)).body.template.name },
      parameters: { message: 'x' },
      target: { kind: 'node', node: sys.nodeId },
    });
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${other.body.id}/runs`, { action: 'deploy' });
    await grantRunAgent(sys.db, { runId: run.body.id, deploymentId: other.body.id, restoreVersion: undefined, credential });
    const res = await agent('POST', `/v1/agent/runs/${run.body.id}/result`, JSON.stringify({ exitCode: 0, stopped: false, outputsFile: Buffer.from('[1,2]').toString('base64') }), {
      'content-type': 'application/json',
    });
    assert.equal(res.status, 204);
    assert.deepEqual(await getAgentResult(sys.db, run.body.id), { exitCode: 0, stopped: false, warnings: ['outputs.json must hold a JSON object; outputs ignored'] });
    assert.equal((await sys.call('POST', `/v1/runs/${run.body.id}/cancel`)).status, 202);
  });

  it('records the first report only, validates it, and stops accepting the credential once the run ended', async () => {
    const post = (body: unknown) => agent('POST', `/v1/agent/runs/${runId}/result`, JSON.stringify(body), { 'content-type': 'application/json' });
    assert.equal((await post({ exitCode: 'zero' })).status, 400);
    assert.equal((await post({ exitCode: 0, stopped: false, outputsFile: 'not base64!' })).status, 400);
    const file = (text: string) => Buffer.from(text).toString('base64');
    assert.equal((await post({ exitCode: 0, stopped: false, warnings: ['w'], stateVersion: 1, outputsFile: file('{"a":1}') })).status, 204);
    assert.equal((await post({ exitCode: 9, stopped: true, warnings: [] })).status, 204);
    assert.deepEqual(await getAgentResult(sys.db, runId), { exitCode: 0, stopped: false, warnings: ['w'], stateVersion: 1, outputs: { a: 1 } });

    assert.equal((await sys.call('POST', `/v1/runs/${runId}/cancel`)).status, 202);
    await eventually('the run to end', async () => {
      const r = await sys.call<{ status: string }>('GET', `/v1/runs/${runId}`);
      return r.body.status === 'cancelled' ? true : undefined;
    });
    assert.equal((await putLog('stdout', 12, 'late\n')).status, 401, 'a credential dies with its run');
  });
});
