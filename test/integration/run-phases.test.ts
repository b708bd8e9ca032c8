/**
 * A running run's phase follows its state through the agent API that the runner calls on every target:
 * `restoring` while the previous /state is read, `executing` once it is (or at once when there is none),
 * `archiving` while /state is stored.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { grantRunAgent } from '../../core/db/run-agents.js';
import { setRunPhase } from '../../core/db/runs.js';
import { createDeployment, registerExampleTemplate } from '../support/fixtures.js';
import { eventually, startTestSystem, type TestSystem } from '../support/system.js';

/** Far more than socket buffers hold, so a reader that stops reading holds the sender mid-stream. */
const LARGE = 32 * 1024 * 1024;

/** An archive stream that stops after its first piece until `release()`. */
function heldArchive(bytes: Buffer) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const half = Math.floor(bytes.length / 2);
  async function* pieces() {
    yield bytes.subarray(0, half);
    await released;
    yield bytes.subarray(half);
  }
  return { pieces, release };
}

describe('run phases', () => {
  let sys: TestSystem;
  let template: Awaited<ReturnType<typeof registerExampleTemplate>>;

  before(async () => {
    // No node worker: a run is started by its workflow and then waits for its node, so it stays running.
    sys = await startTestSystem({ nodeWorker: false, env: { GLIDERGUN_NODE_WAIT_SECONDS: '300' } });
    template = await registerExampleTemplate(sys.call);
  });
  after(async () => {
    await sys.stop();
  });

  const runningRun = async () => {
    const deploymentId = await createDeployment(sys.call, template, { message: 'phases' }, { kind: 'node', node: sys.nodeId });
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
    await eventually('the run to be running', async () => {
      const r = await sys.call<{ status: string; phase: string }>('GET', `/v1/runs/${run.body.id}`);
      return r.body.status === 'running' && r.body.phase === 'preparing' ? true : undefined;
    });
    return { deploymentId, runId: run.body.id };
  };
  const phaseOf = async (runId: string) => (await sys.call<{ phase: string | null }>('GET', `/v1/runs/${runId}`)).body.phase;
  const phaseBecomes = (runId: string, phase: string) =>
    eventually(`the run's phase to be ${phase}`, async () => ((await phaseOf(runId)) === phase ? true : undefined));
  const cancel = async (runId: string) => {
    assert.equal((await sys.call('POST', `/v1/runs/${runId}/cancel`)).status, 202);
    await eventually('the run to end', async () => ((await sys.call<{ status: string }>('GET', `/v1/runs/${runId}`)).body.status === 'cancelled' ? true : undefined));
  };

  it('the runner\'s state upload is archiving, its download restoring, then executing', async () => {
    const { deploymentId, runId } = await runningRun();
    const credential = `ggr_${randomBytes(16).toString('hex')}`;
    await grantRunAgent(sys.db, { runId, deploymentId, restoreVersion: undefined, credential });
    const viaGateway = async () => ({ 'x-glider-gateway': (await readFile(sys.config.nodes.gatewaySecretFile, 'utf8')).trim(), 'x-glider-node': sys.nodeId });
    const agent = async (method: string, body?: ReadableStream<Uint8Array>) =>
      fetch(`${sys.api.url}/v1/agent/runs/${runId}/state`, {
        method,
        // As the node gateway passes a node's runner call on: its secret, and the node its certificate names.
        headers: { authorization: `Bearer ${credential}`, ...(await viaGateway()), ...(body ? { 'content-type': 'application/gzip' } : {}) },
        ...(body ? { body, duplex: 'half' } : {}),
      });

    // No earlier state: the runner starts the template as soon as it is told so.
    await setRunPhase(sys.db, runId, 'preparing');
    assert.equal((await agent('GET')).status, 204);
    assert.equal(await phaseOf(runId), 'executing');

    const archive = heldArchive(randomBytes(LARGE));
    const put = agent('PUT', ReadableStream.from(archive.pieces()));
    await phaseBecomes(runId, 'archiving');
    archive.release();
    const { version } = (await (await put).json()) as { version: number };

    await grantRunAgent(sys.db, { runId, deploymentId, restoreVersion: version, credential });
    await setRunPhase(sys.db, runId, 'preparing');
    const get = await agent('GET');
    assert.equal(get.status, 200);
    // Its body is not read yet, so the server is still sending it.
    assert.equal(await phaseOf(runId), 'restoring');
    assert.equal((await get.arrayBuffer()).byteLength, LARGE);
    await phaseBecomes(runId, 'executing');
    await cancel(runId);
  });
});
