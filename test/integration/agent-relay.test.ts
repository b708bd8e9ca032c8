/**
 * The relay a Docker node serves on each run's unix socket (activities/execution/agent-relay.ts), against
 * the real agent API behind the real gateway (mTLS with an enrolled node's certificate): it adds the run's
 * credential, passes on only that run's agent routes, and a relay that replaced another on the same socket
 * (a run adopted) keeps it when the one before closes.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { X509Certificate, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { startAgentRelay, type ClientTls } from '../../activities/execution/agent-relay.js';
import { createCa, createKeyAndCsr, issueServerCertificate, signNodeCertificate, type CertificateAuthority } from '../../core/pki.js';
import { grantRunAgent } from '../../core/db/run-agents.js';
import { freePort } from '../../infra/dev/ports.js';
import { createDeployment, registerExampleTemplate } from '../support/fixtures.js';
import { startTestSystem, type TestSystem } from '../support/system.js';
import { startGatewayProcess, type Gateway } from '../../workers/gateway-process.js';
import { enrolNode } from '../../workers/node-identity.js';

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
  let gateway: Gateway;
  let agentUrl: string;
  let tls: ClientTls;
  let dir: string;
  let runId: string;
  let otherRunId: string;
  const credential = 'ggr_relay-test-credential-0123456789';

  before(async () => {
    // No node worker: the runs stay active (pending), so their credentials are valid.
    sys = await startTestSystem({ nodeWorker: false });
    dir = await mkdtemp(path.join(os.tmpdir(), 'gg-relay-'));
    // A node of its own, enrolled through a gateway of its own: the agent API serves a node's runs only
    // through the gateway, for the node whose certificate came with the call.
    gateway = await startGatewayProcess({ config: sys.config, ca: sys.api.nodeCa, apiUrl: sys.api.url, listen: `127.0.0.1:${await freePort()}` });
    agentUrl = `https://${gateway.address}`;
    const nodeId = `relay-${randomBytes(3).toString('hex')}`;
    const created = await sys.call<{ enrolment: { token: string; caCertificate: string } }>('POST', '/v1/nodes', { name: nodeId });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const identity = await enrolNode({ gateway: gateway.address, caPem: created.body.enrolment.caCertificate, token: created.body.enrolment.token, dir: path.join(dir, 'identity') });
    tls = { ca: identity.caPem, cert: identity.certPem, key: identity.keyPem };
    const template = await registerExampleTemplate(sys.call);
    const started = async () => {
      const deploymentId = await createDeployment(sys.call, template, { message: 'relay' }, { kind: 'node', node: nodeId });
      const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
      await grantRunAgent(sys.db, { runId: run.body.id, deploymentId, restoreVersion: undefined, credential });
      return run.body.id;
    };
    runId = await started();
    otherRunId = await started();
  });
  after(async () => {
    await gateway.stop();
    await sys.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('passes the run\'s own calls on with its credential, which the caller neither has nor can replace', async () => {
    const socketPath = path.join(dir, 'own.sock');
    const relay = await startAgentRelay({ socketPath, agentUrl, runId, credential, tls: () => tls });
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
    const relay = await startAgentRelay({ socketPath, agentUrl, runId, credential, tls: () => tls });
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
    const relay = await startAgentRelay({ socketPath, agentUrl: `https://127.0.0.1:${await freePort()}`, runId, credential, tls: () => tls });
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
    const first = await startAgentRelay({ socketPath, agentUrl, runId, credential, tls: () => tls });
    const second = await startAgentRelay({ socketPath, agentUrl, runId, credential, tls: () => tls });
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

/**
 * The relay's upstream on a remote node is its gateway: HTTPS with the node's client certificate, trusting
 * only the pinned CA. A stand-in gateway here shows what reaches it; the end-to-end path through the real
 * gateway is test/integration/remote-node.test.ts.
 */
describe('the agent relay over mTLS to a gateway', () => {
  let dir: string;
  let ca: CertificateAuthority;
  let gateway: https.Server;
  let gatewayUrl: string;
  let seen: { path: string; authorization: string | undefined; serial: string | undefined }[];
  const runId = 'run-tlsrelay0001';
  const credential = 'ggr_tls-relay-credential';
  const nodeTls = async (signer: CertificateAuthority): Promise<ClientTls> => {
    const { keyPem, csrPem } = await createKeyAndCsr();
    return { ca: ca.certPem, cert: await signNodeCertificate(signer, csrPem, 'edge-relay'), key: keyPem };
  };
  const serial = (tls: ClientTls) => new X509Certificate(tls.cert).serialNumber;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'gg-relay-tls-'));
    ca = await createCa();
    const server = await issueServerCertificate(ca, { ipAddresses: ['127.0.0.1'] });
    seen = [];
    // Like the gateway: a client certificate of the node CA is required, and the call is answered as the agent API would.
    gateway = https.createServer({ key: server.keyPem, cert: server.certPem, ca: [ca.certPem], requestCert: true, rejectUnauthorized: true }, (req, res) => {
      const socket = req.socket as TLSSocket;
      seen.push({ path: req.url ?? '', authorization: req.headers.authorization, serial: socket.getPeerX509Certificate()?.serialNumber });
      req.resume();
      res.writeHead(204).end();
    });
    await new Promise<void>((resolve) => gateway.listen(0, '127.0.0.1', resolve));
    gatewayUrl = `https://127.0.0.1:${(gateway.address() as AddressInfo).port}`;
  });
  after(async () => {
    gateway.closeAllConnections();
    await new Promise<void>((resolve) => gateway.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it('presents the node\'s certificate and the run\'s credential, and the renewed certificate from the next call on', async () => {
    const first = await nodeTls(ca);
    const renewed = await nodeTls(ca);
    let current = first;
    const socketPath = path.join(dir, 'tls.sock');
    const relay = await startAgentRelay({ socketPath, agentUrl: gatewayUrl, runId, credential, tls: () => current });
    try {
      assert.equal((await overSocket(socketPath, 'GET', `/v1/agent/runs/${runId}/state`, { authorization: 'Bearer ggr_forged' })).status, 204);
      current = renewed;
      assert.equal((await overSocket(socketPath, 'GET', `/v1/agent/runs/${runId}/state`)).status, 204);
    } finally {
      await relay.close();
    }
    assert.deepEqual(seen.map((s) => s.serial), [serial(first), serial(renewed)]);
    assert.ok(seen.every((s) => s.authorization === `Bearer ${credential}`), 'the run\'s credential, never the caller\'s');
    seen = [];
  });

  it('answers 502 when the upstream is not the pinned CA\'s, or refuses the node\'s certificate, and sends nothing there', async () => {
    const impostorCa = await createCa({ commonName: 'impostor' });
    const socketPath = path.join(dir, 'pinned.sock');
    // Pinned to the impostor's CA: the real gateway's certificate is not trusted, whatever the system's roots say.
    const pinnedElsewhere = { ...(await nodeTls(ca)), ca: impostorCa.certPem };
    const relay = await startAgentRelay({ socketPath, agentUrl: gatewayUrl, runId, credential, tls: () => pinnedElsewhere });
    try {
      const res = await overSocket(socketPath, 'GET', `/v1/agent/runs/${runId}/state`);
      assert.equal(res.status, 502, res.body);
      assert.equal((JSON.parse(res.body) as { code: string }).code, 'AGENT_UNREACHABLE');
    } finally {
      await relay.close();
    }
    // A certificate the gateway's CA did not sign: the handshake fails, the runner sees 502 and tries again.
    const strangerPath = path.join(dir, 'stranger.sock');
    const stranger = await nodeTls(impostorCa);
    const relay2 = await startAgentRelay({ socketPath: strangerPath, agentUrl: gatewayUrl, runId, credential, tls: () => stranger });
    try {
      assert.equal((await overSocket(strangerPath, 'GET', `/v1/agent/runs/${runId}/state`)).status, 502);
    } finally {
      await relay2.close();
    }
    assert.deepEqual(seen, [], 'nothing reached the gateway');
  });
});
