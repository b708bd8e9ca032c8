/**
 * The relay a Docker node serves on each run's unix socket (activities/execution/agent-relay.ts), against
 * the real agent API: it adds the run's credential, passes on only that run's agent routes, and a relay that
 * replaced another on the same socket (a run adopted) keeps it when the one before closes.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startAgentRelay } from '../../activities/execution/agent-relay.js';
import { grantRunAgent } from '../../core/db/run-agents.js';
import { freePort } from '../../infra/dev/ports.js';
import { createDeployment, registerExampleTemplate } from '../support/fixtures.js';
import { startTestSystem, type TestSystem } from '../support/system.js';

/** One request over the socket, as the runner makes it. */
function overSocket(socketPath: string, method: string, urlPath: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, headers: { host: 'agent', ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the agent relay of a Docker node', () => {
  let sys: TestSystem;
  let dir: string;
  let runId: string;
  let otherRunId: string;
  const credential = 'ggr_relay-test-credential-0123456789';

  before(async () => {
    // No node worker: the runs stay active (pending), so their credentials are valid.
    sys = await startTestSystem({ nodeWorker: false });
    dir = await mkdtemp(path.join(os.tmpdir(), 'gg-relay-'));
    const template = await registerExampleTemplate(sys.call);
    const started = async () => {
      const deploymentId = await createDeployment(sys.call, template, { message: 'relay' }, { kind: 'node', node: sys.nodeId });
      const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
      await grantRunAgent(sys.db, { runId: run.body.id, deploymentId, restoreVersion: undefined, credential });
      return run.body.id;
    };
    runId = await started();
    otherRunId = await started();
  });
  after(async () => {
    await sys.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('passes the run\'s own calls on with its credential, which the caller neither has nor can replace', async () => {
    const socketPath = path.join(dir, 'own.sock');
    const relay = await startAgentRelay({ socketPath, agentUrl: sys.api.url, runId, credential });
    try {
      assert.equal((await overSocket(socketPath, 'GET', `/v1/agent/runs/${runId}/state`)).status, 204, 'no state to restore: the call got through');
      const forged = await overSocket(socketPath, 'GET', `/v1/agent/runs/${runId}/state`, { authorization: 'Bearer ggr_forged' });
      assert.equal(forged.status, 204, 'the caller\'s own Authorization is not what reaches the agent API');
    } finally {
      await relay.close();
    }
  });

  it('refuses another run\'s routes, a way out with ../, and anything that is not the agent API', async () => {
    const socketPath = path.join(dir, 'narrow.sock');
    const relay = await startAgentRelay({ socketPath, agentUrl: sys.api.url, runId, credential });
    try {
      // The other run has the same credential here: only the relay's own check stands between them.
      for (const urlPath of [
        `/v1/agent/runs/${otherRunId}/state`,
        `/v1/agent/runs/${runId}/../${otherRunId}/state`,
        `/v1/agent/runs/${runId}/%2e%2e/${otherRunId}/state`,
        '/v1/deployments',
        '/healthz',
      ]) {
        const res = await overSocket(socketPath, 'GET', urlPath);
        assert.equal(res.status, 404, `${urlPath}: ${res.body}`);
        assert.equal((JSON.parse(res.body) as { code: string }).code, 'NOT_FOUND', urlPath);
      }
    } finally {
      await relay.close();
    }
  });

  it('answers 502 when the agent API cannot be reached, so the runner tries again', async () => {
    const socketPath = path.join(dir, 'down.sock');
    const relay = await startAgentRelay({ socketPath, agentUrl: `http://127.0.0.1:${await freePort()}`, runId, credential });
    try {
      const res = await overSocket(socketPath, 'GET', `/v1/agent/runs/${runId}/state`);
      assert.equal(res.status, 502);
      assert.equal((JSON.parse(res.body) as { code: string }).code, 'AGENT_UNREACHABLE');
    } finally {
      await relay.close();
    }
  });

  it('keeps the socket of the relay that replaced another when the one before closes (a run adopted)', async () => {
    const socketPath = path.join(dir, 'adopted.sock');
    const first = await startAgentRelay({ socketPath, agentUrl: sys.api.url, runId, credential });
    const second = await startAgentRelay({ socketPath, agentUrl: sys.api.url, runId, credential });
    try {
      await first.close();
      assert.ok(existsSync(socketPath), 'the socket is still there');
      assert.equal((await overSocket(socketPath, 'GET', `/v1/agent/runs/${runId}/state`)).status, 204, 'and the relay that replaced the first answers on it');
    } finally {
      await second.close();
    }
    assert.equal(existsSync(socketPath), false, 'the last relay removes its socket');
  });
});
