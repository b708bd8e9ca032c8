import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { scriptImage } from '../support/images.js';
import { uniqueName } from '../support/fixtures.js';
import { eventually, startTestSystem, type TestSystem } from '../support/system.js';

interface Run {
  id: string;
  status: string;
  reason: string | null;
  message: string | null;
  exitCode: number | null;
  stateVersion: number | null;
}

describe('run timeouts and resource limits', () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem({ env: { GLIDERGUN_RUN_TIMEOUT_MAX_SECONDS: '600' } });
  });
  after(async () => {
    await sys.stop();
  });

  async function templateOf(script: string, limits: Record<string, number> = {}): Promise<string> {
    const name = uniqueName('limits');
    await sys.call('POST', '/v1/templates', { name });
    const v = await sys.call('POST', `/v1/templates/${name}/versions`, { image: await scriptImage(sys.docker, script), limits });
    assert.equal(v.status, 201, JSON.stringify(v.body));
    return name;
  }
  async function runOf(template: string, limits: Record<string, number> = {}): Promise<Run> {
    const dep = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name: template }, target: { kind: 'node', node: sys.nodeId }, limits });
    assert.equal(dep.status, 201, JSON.stringify(dep.body));
    const run = await sys.call<Run>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
    return eventually('the run to end', async () => {
      const r = await sys.call<Run>('GET', `/v1/runs/${run.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    });
  }

  it("ends a run over its deployment's timeout as failed/timeout, with its log and state kept", async () => {
    // Left alone, the template would end by itself after 10 s, printing "slept" (and succeed, well within the
    // wait for the run's end): the deployment's 1 s timeout must end it first, not the version's 300 s. An
    // ordering the status and the log show, whatever the machine's load.
    const template = await templateOf('#!/bin/sh\necho working > /state/progress\necho "started"\nsleep 10\necho "slept"\n', { timeoutSeconds: 300 });
    const run = await runOf(template, { timeoutSeconds: 1 });
    assert.equal(run.status, 'failed');
    assert.equal(run.reason, 'timeout');
    assert.match(run.message ?? '', /timeout of 1s/);
    assert.equal(run.stateVersion, 1, 'state archived after a timeout');
    const log = await fetch(`${sys.api.url}/v1/runs/${run.id}/logs`, { headers: { authorization: `Bearer ${sys.tokens.viewer}` } });
    assert.equal(await log.text(), 'started\n');
  });

  it('kills a run that exceeds its memory limit and says so', async () => {
    const template = await templateOf('#!/bin/sh\nx=$(head -c 200000000 /dev/zero | tr "\\\\0" x)\necho "${#x}"\n', { memoryMb: 32 });
    const run = await runOf(template);
    assert.equal(run.status, 'failed');
    assert.equal(run.reason, 'exit-code');
    assert.match(run.message ?? '', /out of memory/);
  });

  it('refuses a timeout over the installation maximum', async () => {
    const name = uniqueName('limits');
    await sys.call('POST', '/v1/templates', { name });
    const res = await sys.call<{ code: string }>('POST', `/v1/templates/${name}/versions`, { image: 'x:1', limits: { timeoutSeconds: 601 } });
    assert.equal(res.status, 422);
    assert.equal(res.body.code, 'LIMIT_EXCEEDED');
    const bad = await sys.call<{ code: string }>('POST', `/v1/templates/${name}/versions`, { image: 'x:1', limits: { memoryMb: 1 } });
    assert.equal(bad.status, 400);
  });
});
