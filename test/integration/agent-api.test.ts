/**
 * The agent API that a run's pod-runner calls back (api/agent/routes.ts), against the real database: the
 * per-run credential, log frames stored in their order exactly once at their offsets, the state archive both
 * ways, the report (and the state version it may name).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { LOG_FRAMES_TYPE, encodeLogFrames } from '../../api/agent/log-frames.js';
import { grantRunAgent, getAgentResult, runAgentStarted } from '../../core/db/run-agents.js';
import { createDeployment, registerExampleTemplate } from '../support/fixtures.js';
import { eventually, startTestSystem, type TestSystem } from '../support/system.js';

describe('the agent API', () => {
  let sys: TestSystem;
  let deploymentId: string;
  let runId: string;
  const credential = 'ggr_test-credential-0123456789';

  /** What the node gateway adds to a node's calls: its secret and the node its certificate names. */
  let viaGateway: Record<string, string>;
  const agent = (method: string, path: string, body?: Buffer | string, headers: Record<string, string> = {}, token = credential) =>
    fetch(`${sys.api.url}${path}`, { method, body, headers: { authorization: `Bearer ${token}`, ...viaGateway, ...headers } });
  type Frame = { stream: string; offset: number; data: Buffer | string };
  const postBody = (body: Buffer, id = runId, type = LOG_FRAMES_TYPE) => agent('POST', `/v1/agent/runs/${id}/log-frames`, body, { 'content-type': type });
  const postFrames = (frames: Frame[], id = runId) => postBody(encodeLogFrames(frames), id);
  const logText = async (id: string, stream?: string) => {
    const res = await fetch(`${sys.api.url}/v1/runs/${id}/logs${stream ? `?stream=${encodeURIComponent(stream)}` : ''}`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } });
    return res.text();
  };
  const rows = async (id: string) =>
    (await sys.db.query<{ stream: string; start_offset: string; data: Buffer }>('SELECT stream, start_offset, data FROM run_log_chunks WHERE run_id = $1 ORDER BY seq', [id])).rows.map(
      (r) => `${r.stream}@${r.start_offset}:${r.data.toString()}`,
    );
  /** A run of a deployment of its own, active (no node worker: it stays pending) and granted the credential. */
  const newRun = async () => {
    const name = (await sys.call<{ template: { name: string } }>('GET', `/v1/deployments/${deploymentId}`)).body.template.name;
    const dep = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, parameters: { message: 'x' }, target: { kind: 'node', node: sys.nodeId } });
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
    await grantRunAgent(sys.db, { runId: run.body.id, deploymentId: dep.body.id, restoreVersion: undefined, credential });
    return { runId: run.body.id, deploymentId: dep.body.id };
  };
  const cancel = async (id: string) => assert.equal((await sys.call('POST', `/v1/runs/${id}/cancel`)).status, 202);

  before(async () => {
    // No node worker: the run stays pending, which is an active run whose agent may call in.
    sys = await startTestSystem({ nodeWorker: false, env: { GLIDERGUN_LOG_MAX_BYTES: '2048' } });
    viaGateway = { 'x-glider-gateway': (await readFile(sys.config.nodes.gatewaySecretFile, 'utf8')).trim(), 'x-glider-node': sys.nodeId };
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

  it('stores log frames once at their offsets: a repeat is skipped, an overlap trimmed, a gap refuses the whole call', async () => {
    assert.equal((await postFrames([{ stream: 'stdout', offset: 0, data: 'hello ' }])).status, 204);
    assert.equal((await postFrames([{ stream: 'stdout', offset: 0, data: 'hello ' }])).status, 204, 'a retried call is harmless');
    const overlapping: Frame[] = [
      { stream: 'stdout', offset: 3, data: 'lo world\n' },
      { stream: 'stderr', offset: 0, data: 'oops\n' },
      { stream: 'stdout', offset: 12, data: 'again\n' },
    ];
    assert.equal((await postFrames(overlapping)).status, 204, 'an overlapping call stores only what is new');
    assert.equal((await postFrames(overlapping)).status, 204, 'the same call retried (its answer lost) stores nothing twice');
    assert.deepEqual(await rows(runId), ['stdout@0:hello ', 'stdout@6:world\n', 'stderr@0:oops\n', 'stdout@12:again\n']);

    const gap = await postFrames([
      { stream: 'stderr', offset: 5, data: 'not stored\n' },
      { stream: 'stdout', offset: 100, data: 'x' },
    ]);
    assert.equal(gap.status, 409);
    const body = (await gap.json()) as { code: string; storedBytes: Record<string, number>; details: { stream: string } };
    assert.equal(body.code, 'LOG_OFFSET_MISMATCH');
    assert.deepEqual(body.storedBytes, { stdout: 'hello world\nagain\n'.length, stderr: 'oops\n'.length }, 'what every stream holds');
    assert.equal(body.details.stream, 'stdout');
    assert.equal(await logText(runId, 'stderr'), 'oops\n', 'nothing of a refused call is stored');
    assert.equal(await logText(runId, 'stdout'), 'hello world\nagain\n');
  });

  it('stores the frames of every stream in their order: the combined log is the writing order', async () => {
    const { runId: id } = await newRun();
    const frames: Frame[] = [];
    const offsets: Record<string, number> = {};
    let want = '';
    for (let i = 0; i < 100; i++) { // within the test's cap of 2048 bytes a stream
      for (const stream of ['stdout', 'stderr', ...(i % 7 === 0 ? ['file:app.log'] : [])]) {
        const data = `${stream} line ${i}\n`;
        frames.push({ stream, offset: offsets[stream] ?? 0, data });
        offsets[stream] = (offsets[stream] ?? 0) + data.length;
        want += data;
      }
    }
    // Two calls, the second overlapping the first (a retry after a lost answer, with more behind it).
    assert.equal((await postFrames(frames.slice(0, 150), id)).status, 204);
    assert.equal((await postFrames(frames.slice(120), id)).status, 204);
    assert.equal(await logText(id), want);
    // Consecutive frames of one stream become one row.
    assert.equal((await postFrames([{ stream: 'stdout', offset: offsets.stdout!, data: 'a' }, { stream: 'stdout', offset: offsets.stdout! + 1, data: 'b\n' }], id)).status, 204);
    assert.equal((await rows(id)).at(-1), `stdout@${offsets.stdout}:ab\n`);
    assert.equal((await rows(id)).length, frames.length + 1);
    await cancel(id);
  });

  it('refuses frames past the cap, and bad frames with a message naming the frame', async () => {
    const { runId: id } = await newRun();
    const tooBig = await postFrames([{ stream: 'stdout', offset: 0, data: 'fits\n' }, { stream: 'stderr', offset: 0, data: 'x'.repeat(4096) }], id);
    assert.equal(tooBig.status, 413, 'past the cap (2048 + the marker\'s slack)');
    const refusal = (await tooBig.json()) as { code: string; details: { stream: string } };
    assert.equal(refusal.code, 'PAYLOAD_TOO_LARGE');
    assert.equal(refusal.details.stream, 'stderr', 'the stream at fault, so the runner gives up that one only');
    assert.equal(await logText(id), '', 'nothing of the call is stored');

    const good = encodeLogFrames([{ stream: 'stdout', offset: 0, data: 'ok\n' }]);
    const offsetTooLarge = Buffer.from(good);
    offsetTooLarge.writeBigUInt64BE(2n ** 60n, 2 + 'stdout'.length);
    for (const [what, body, message] of [
      ['no frame at all', Buffer.alloc(0), /^the body holds no log frames/],
      ['a bad stream name', Buffer.concat([good, encodeLogFrames([{ stream: '../etc/passwd', offset: 0, data: 'x' }])]), /^log frame 1 \(at byte 23\): stream "\.\.\/etc\/passwd" is not stdout, stderr or file:<name>/],
      ['an empty stream name', encodeLogFrames([{ stream: '', offset: 0, data: 'x' }]), /^log frame 0 \(at byte 0\): stream "" is not/],
      ['a header cut short', good.subarray(0, 12), /^log frame 0 \(at byte 0\): cut short/],
      ['data cut short', good.subarray(0, good.length - 1), /^log frame 0 \(at byte 0\): 3 data bytes announced, 2 left/],
      ['a byte after the last frame', Buffer.concat([good, Buffer.from([0])]), /^log frame 1 \(at byte 23\): cut short in its stream name length/],
      ['an offset past 2^53', offsetTooLarge, /^log frame 0 \(at byte 0\): offset 1152921504606846976 is too large/],
    ] as const) {
      const res = await postBody(body, id);
      assert.equal(res.status, 400, what);
      const problem = (await res.json()) as { code: string; message: string };
      assert.equal(problem.code, 'VALIDATION_FAILED', what);
      assert.match(problem.message, message, what);
    }
    assert.equal((await postBody(good, id, 'application/octet-stream')).status, 415);
    assert.equal(await logText(id), '', 'nothing of a refused call is stored');
    await cancel(id);
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

  it('records the state version this run archived, never another one a report claims', async () => {
    const post = (id: string, body: unknown) => agent('POST', `/v1/agent/runs/${id}/result`, JSON.stringify(body), { 'content-type': 'application/json' });
    const archived = await newRun();
    const put = await agent('PUT', `/v1/agent/runs/${archived.runId}/state`, gzipSync(Buffer.from('state')), { 'content-type': 'application/gzip' });
    const version = ((await put.json()) as { version: number }).version;
    const lying = await post(archived.runId, { exitCode: 0, stopped: false, stateVersion: version + 1 });
    assert.equal(lying.status, 400);
    const problem = (await lying.json()) as { code: string; message: string };
    assert.equal(problem.code, 'VALIDATION_FAILED');
    assert.equal(problem.message, `stateVersion ${version + 1} is not the state version this run archived (${version}); result not recorded`);
    assert.equal(await getAgentResult(sys.db, archived.runId), undefined, 'a refused report is not recorded');
    // A report that names none still gets the version the run archived.
    assert.equal((await post(archived.runId, { exitCode: 0, stopped: false })).status, 204);
    assert.deepEqual(await getAgentResult(sys.db, archived.runId), { exitCode: 0, stopped: false, warnings: [], stateVersion: version });

    // A run that archived nothing (a template reporting before its runner) cannot borrow another run's version.
    const early = await newRun();
    const borrowed = await post(early.runId, { exitCode: 0, stopped: false, stateVersion: version });
    assert.equal(borrowed.status, 400);
    assert.match(((await borrowed.json()) as { message: string }).message, /this run archived \(it archived none\)/);
    assert.equal(await getAgentResult(sys.db, early.runId), undefined);
    await cancel(archived.runId);
    await cancel(early.runId);
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
    assert.equal((await postFrames([{ stream: 'stdout', offset: 18, data: 'late\n' }])).status, 401, 'a credential dies with its run');
  });
});
