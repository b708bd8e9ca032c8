/**
 * Nodes as the API sees them: creation and one-time enrolment tokens, the certificate the node CA signs (its
 * identity from the token, never from the CSR), the pinned sealing key, revocation, and the node API's rule
 * that the gateway vouches for the node and a node sees its own active runs only. The gateway in front of
 * it is tested in gateway.test.ts; a whole node through both in remote-node.test.ts.
 */
import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { generateNodeKeyPair } from '../../core/crypto.js';
import { createKeyAndCsr, nodeIdOf } from '../../core/pki.js';
import { createDeployment, registerExampleTemplate, uniqueName, waitForRun } from '../support/fixtures.js';
import { apiClient, startTestSystem, type TestSystem } from '../support/system.js';

type Call = ReturnType<typeof apiClient>;
interface Created {
  node: { id: string; status: string; connection: string };
  enrolment: { token: string; expiresAt: string; gateway: string; caCertificate: string };
}
interface Enrolled {
  nodeId: string;
  certificate: string;
  caCertificate: string;
  notAfter: string;
}
interface ErrorBody {
  code: string;
  message: string;
}

describe('nodes: enrolment, identity and revocation', () => {
  let sys: TestSystem;
  /** The node API as the gateway calls it: with its secret, naming the node whose certificate it verified. */
  let asGateway: (nodeId?: string) => Call;

  before(async () => {
    sys = await startTestSystem({ nodeWorker: false });
    const secret = (await readFile(sys.config.nodes.gatewaySecretFile, 'utf8')).trim();
    asGateway = (nodeId) => apiClient(sys.api.url, undefined, { 'x-glider-gateway': secret, ...(nodeId ? { 'x-glider-node': nodeId } : {}) });
  });
  after(async () => {
    await sys.stop();
  });

  const createNode = async (name = uniqueName('n')) => {
    const res = await sys.call<Created>('POST', '/v1/nodes', { name, labels: { site: 'lab' } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body;
  };
  const enrolBody = async (token: string, csrName?: string) => ({
    token,
    csr: (await createKeyAndCsr(csrName)).csrPem,
    sealingPublicKey: generateNodeKeyPair().publicKey,
  });

  it('creates a node with a one-time token that expires; the token works once and names the node, whatever the CSR asks for', async () => {
    const made = await createNode();
    assert.equal(made.node.status, 'pending');
    assert.equal(made.node.connection, 'never-seen');
    assert.match(made.enrolment.token, /^gge_/);
    const ttl = Date.parse(made.enrolment.expiresAt) - Date.now();
    assert.ok(ttl > 50 * 60_000 && ttl <= 60 * 60_000, `expires in about an hour, not ${ttl} ms`);
    assert.equal(made.enrolment.caCertificate, sys.api.nodeCa.certPem);
    assert.deepEqual(Object.keys(made.enrolment).sort(), ['caCertificate', 'expiresAt', 'gateway', 'token']);
    // Only a hash is kept.
    const stored = await sys.db.query<{ token_sha256: Buffer }>('SELECT token_sha256 FROM node_enrolments WHERE node_id = $1', [made.node.id]);
    assert.equal(stored.rows.length, 1);
    assert.ok(!stored.rows[0]!.token_sha256.toString('utf8').includes(made.enrolment.token));

    // The CSR asks to be another node: its subject is ignored.
    const body = await enrolBody(made.enrolment.token, 'node other-node');
    const enrolled = await asGateway()<Enrolled>('POST', '/v1/node/enrol', body);
    assert.equal(enrolled.status, 200, JSON.stringify(enrolled.body));
    assert.equal(enrolled.body.nodeId, made.node.id);
    assert.equal(nodeIdOf(enrolled.body.certificate), made.node.id);
    const cert = new X509Certificate(enrolled.body.certificate);
    assert.ok(cert.verify(new X509Certificate(sys.api.nodeCa.certPem).publicKey), 'signed by the node CA');
    assert.ok(!cert.subject.includes('other-node'));
    const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
    assert.ok(days > 29 && days <= 30.01, `about 30 days, not ${days}`);

    const node = await sys.call<{ status: string; certificateNotAfter: string }>('GET', `/v1/nodes/${made.node.id}`);
    assert.equal(node.body.status, 'active');
    const pinned = await sys.db.query<{ sealing_public_key: string }>('SELECT sealing_public_key FROM nodes WHERE id = $1', [made.node.id]);
    assert.equal(pinned.rows[0]!.sealing_public_key, body.sealingPublicKey);

    // Twice: refused, and the pinned key stays.
    const again = await asGateway()<ErrorBody>('POST', '/v1/node/enrol', await enrolBody(made.enrolment.token));
    assert.equal(again.status, 403);
    assert.equal(again.body.code, 'ENROLMENT_REFUSED');
    const still = await sys.db.query<{ sealing_public_key: string }>('SELECT sealing_public_key FROM nodes WHERE id = $1', [made.node.id]);
    assert.equal(still.rows[0]!.sealing_public_key, body.sealingPublicKey);
  });

  it('refuses an expired or unknown token, and a bad CSR or sealing key without spending the token', async () => {
    const made = await createNode();
    const badCsr = await asGateway()<ErrorBody>('POST', '/v1/node/enrol', { ...(await enrolBody(made.enrolment.token)), csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n' });
    assert.equal(badCsr.status, 400);
    assert.equal(badCsr.body.code, 'CERTIFICATE_REQUEST_INVALID');
    // An EC key where the node's X25519 sealing key belongs.
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    const badKey = await asGateway()<ErrorBody>('POST', '/v1/node/enrol', { ...(await enrolBody(made.enrolment.token)), sealingPublicKey: ec });
    assert.equal(badKey.status, 400);
    assert.match(badKey.body.message, /X25519/);
    // Both refusals left the token usable.
    const ok = await asGateway()<Enrolled>('POST', '/v1/node/enrol', await enrolBody(made.enrolment.token));
    assert.equal(ok.status, 200, JSON.stringify(ok.body));

    const late = await createNode();
    await sys.db.query(`UPDATE node_enrolments SET expires_at = now() - interval '1 second' WHERE node_id = $1`, [late.node.id]);
    const expired = await asGateway()<ErrorBody>('POST', '/v1/node/enrol', await enrolBody(late.enrolment.token));
    assert.equal(expired.status, 403);
    assert.equal(expired.body.code, 'ENROLMENT_REFUSED');
    const unknown = await asGateway()<ErrorBody>('POST', '/v1/node/enrol', await enrolBody(`gge_${'A'.repeat(43)}`));
    assert.equal(unknown.status, 403);
    assert.equal((await sys.call<{ status: string }>('GET', `/v1/nodes/${late.node.id}`)).body.status, 'pending');

    // A new token for the pending node works; the expired one stays refused.
    const reissued = await sys.call<{ token: string }>('POST', `/v1/nodes/${late.node.id}/enrolment-token`);
    assert.equal(reissued.status, 201);
    assert.equal((await asGateway()('POST', '/v1/node/enrol', await enrolBody(reissued.body.token))).status, 200);
    const notPending = await sys.call<ErrorBody>('POST', `/v1/nodes/${late.node.id}/enrolment-token`);
    assert.equal(notPending.status, 409);
    assert.equal(notPending.body.code, 'NODE_NOT_PENDING');
  });

  it('believes a node id only from the gateway: no secret, a wrong secret, or a node named without it are refused', async () => {
    const made = await createNode();
    const noGateway = await apiClient(sys.api.url)<ErrorBody>('POST', '/v1/node/enrol', await enrolBody(made.enrolment.token));
    assert.equal(noGateway.status, 401);
    assert.equal(noGateway.body.code, 'NODE_IDENTITY_REQUIRED');
    const wrong = await apiClient(sys.api.url, undefined, { 'x-glider-gateway': 'not-the-secret' })<ErrorBody>('POST', '/v1/node/heartbeat', { version: '1', capacity: 1, activeRuns: [] });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.code, 'UNAUTHENTICATED');
    const named = await apiClient(sys.api.url, undefined, { 'x-glider-node': made.node.id })<ErrorBody>('POST', '/v1/node/heartbeat', { version: '1', capacity: 1, activeRuns: [] });
    assert.equal(named.status, 401);
    assert.equal(named.body.code, 'NODE_IDENTITY_REQUIRED');
    // Through the gateway, but no certificate was presented (only enrolment takes that).
    const anonymous = await asGateway()<ErrorBody>('POST', '/v1/node/heartbeat', { version: '1', capacity: 1, activeRuns: [] });
    assert.equal(anonymous.status, 401);
    // None of these enrolled the node or spent its token.
    assert.equal((await asGateway()('POST', '/v1/node/enrol', await enrolBody(made.enrolment.token))).status, 200);
  });

  it('shows a node online from its heartbeat, with version and capacity; renews its certificate; revocation refuses it everywhere', async () => {
    const made = await createNode();
    const id = made.node.id;
    assert.equal((await asGateway()('POST', '/v1/node/enrol', await enrolBody(made.enrolment.token))).status, 200);
    assert.equal((await asGateway(id)('POST', '/v1/node/heartbeat', { version: '9.9.9', capacity: 7, activeRuns: [] })).status, 200);
    const listed = await sys.call<{ items: { id: string; connection: string; version: string; capacity: number; lastSeenAt: string }[] }>('GET', '/v1/nodes');
    const seen = listed.body.items.find((n) => n.id === id);
    assert.equal(seen?.connection, 'online');
    assert.equal(seen?.version, '9.9.9');
    assert.equal(seen?.capacity, 7);
    await sys.db.query(`UPDATE nodes SET last_seen_at = now() - interval '5 minutes' WHERE id = $1`, [id]);
    assert.equal((await sys.call<{ connection: string }>('GET', `/v1/nodes/${id}`)).body.connection, 'offline');

    const renewed = await asGateway(id)<Enrolled>('POST', '/v1/node/certificate', { csr: (await createKeyAndCsr()).csrPem });
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    assert.equal(nodeIdOf(renewed.body.certificate), id);
    assert.equal((await asGateway(id)<{ status: string }>('GET', `/v1/gateway/nodes/${id}`)).body.status, 'active');

    const revoked = await sys.call<{ status: string; revokedBy: string; connection: string }>('POST', `/v1/nodes/${id}/revoke`);
    assert.equal(revoked.status, 200);
    assert.equal(revoked.body.status, 'revoked');
    assert.equal(revoked.body.connection, 'revoked');
    assert.equal((await asGateway(id)<{ status: string }>('GET', `/v1/gateway/nodes/${id}`)).body.status, 'revoked');
    const noCert = await asGateway(id)<ErrorBody>('POST', '/v1/node/certificate', { csr: (await createKeyAndCsr()).csrPem });
    assert.equal(noCert.status, 403);
    assert.equal(noCert.body.code, 'NODE_REVOKED');
    // A viewer sees nodes, an operator cannot revoke one.
    assert.equal((await apiClient(sys.api.url, sys.tokens.viewer)('GET', '/v1/nodes')).status, 200);
    assert.equal((await apiClient(sys.api.url, sys.tokens.operator)('POST', `/v1/nodes/${id}/revoke`)).status, 403);
    assert.equal((await sys.call<ErrorBody>('POST', '/v1/nodes', { name: id })).body.code, 'NODE_EXISTS');
    assert.equal((await sys.call<ErrorBody>('POST', '/v1/nodes', { name: 'Not_A_Name' })).status, 400);
  });

  it('grants a run only to the node it runs on, while it is active, with its secrets sealed to that node\'s pinned key', async () => {
    const [a, b] = [await createNode(), await createNode()];
    const keyA = generateNodeKeyPair();
    for (const [made, key] of [[a, keyA.publicKey], [b, generateNodeKeyPair().publicKey]] as const) {
      const res = await asGateway()('POST', '/v1/node/enrol', { ...(await enrolBody(made.enrolment.token)), sealingPublicKey: key });
      assert.equal(res.status, 200);
    }
    const template = await registerExampleTemplate(sys.call, {
      parameters: [
        { name: 'message', type: 'string', required: true },
        { name: 'password', type: 'string', sensitive: true },
      ],
    });
    const deployment = await createDeployment(sys.call, template, { message: 'hi', password: 'hunter2' }, { kind: 'node', node: a.node.id });
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${deployment}/runs`, { action: 'deploy' });
    assert.equal(started.status, 202);
    const runId = started.body.id;
    // Nobody polls node A's queue here: the run stays running, waiting for its node.
    await assertEventually(async () => (await sys.db.query('SELECT 1 FROM runs WHERE id = $1 AND started_at IS NOT NULL', [runId])).rows.length === 1);

    const grant = await asGateway(a.node.id)<{ spec: { runId: string; deploymentId: string; parameters: Record<string, unknown> }; secrets: { epk: string } }>('GET', `/v1/node/runs/${runId}`);
    assert.equal(grant.status, 200, JSON.stringify(grant.body));
    assert.equal(grant.body.spec.runId, runId);
    assert.equal(grant.body.spec.deploymentId, deployment);
    assert.equal(grant.body.spec.parameters.password, undefined, 'sensitive values only sealed');
    const { openSealedForNode } = await import('../../core/crypto.js');
    assert.deepEqual(JSON.parse(openSealedForNode(keyA.privateKeyPem, grant.body.secrets as never).toString('utf8')), { password: 'hunter2' });
    assert.ok(createPublicKey(keyA.privateKeyPem));

    for (const [method, path] of [['GET', `/v1/node/runs/${runId}`], ['GET', `/v1/node/runs/${runId}/report`], ['PUT', `/v1/node/runs/${runId}/agent`]] as const) {
      const other = await asGateway(b.node.id)<ErrorBody>(method, path, method === 'PUT' ? { credentialSha256: Buffer.alloc(32).toString('base64') } : undefined);
      assert.equal(other.status, 404, `${method} ${path} for node B`);
      assert.equal(other.body.code, 'RUN_NOT_OF_NODE');
    }
    const active = await asGateway(b.node.id)<{ active: string[] }>('POST', '/v1/node/active-runs', { runIds: [runId] });
    assert.deepEqual(active.body.active, [], 'node B does not see A\'s run as its own');
    assert.deepEqual((await asGateway(a.node.id)<{ active: string[] }>('POST', '/v1/node/active-runs', { runIds: [runId] })).body.active, [runId]);

    // Revoking A ends its active run as node-revoked, and its grant is gone.
    assert.equal((await sys.call('POST', `/v1/nodes/${a.node.id}/revoke`)).status, 200);
    const ended = await waitForRun(sys.call, runId, 60_000);
    assert.equal(ended.status, 'failed');
    assert.equal(ended.reason, 'node-revoked');
    const gone = await asGateway(a.node.id)<ErrorBody>('GET', `/v1/node/runs/${runId}`);
    assert.equal(gone.status, 403);
    assert.equal(gone.body.code, 'NODE_REVOKED');
  });

  it('keeps the state a node sends after its run ended, set apart: never current, never dropped, promoted by a rollback', async () => {
    const made = await createNode();
    assert.equal((await asGateway()('POST', '/v1/node/enrol', await enrolBody(made.enrolment.token))).status, 200);
    const template = await registerExampleTemplate(sys.call);
    const deployment = await createDeployment(sys.call, template, { message: 'late' }, { kind: 'node', node: made.node.id });
    const runId = (await sys.call<{ id: string }>('POST', `/v1/deployments/${deployment}/runs`, { action: 'deploy' })).body.id;
    await assertEventually(async () => (await sys.db.query('SELECT 1 FROM runs WHERE id = $1 AND started_at IS NOT NULL', [runId])).rows.length === 1);
    // The node took the run (its relay's credential registered), then went away; the run was cancelled meanwhile.
    const credential = `ggr_${'c'.repeat(43)}`;
    const { createHash } = await import('node:crypto');
    const digest = createHash('sha256').update(credential).digest('base64');
    assert.equal((await asGateway(made.node.id)('PUT', `/v1/node/runs/${runId}/agent`, { credentialSha256: digest })).status, 200);
    assert.equal((await sys.call('POST', `/v1/runs/${runId}/cancel`)).status, 202);
    const ended = await waitForRun(sys.call, runId, 60_000);
    assert.equal(ended.status, 'cancelled');

    const secret = (await readFile(sys.config.nodes.gatewaySecretFile, 'utf8')).trim();
    const { gzipSync } = await import('node:zlib');
    const archive = gzipSync(Buffer.from('terraform.tfstate written after the run was closed'));
    const put = (headers: Record<string, string>) =>
      fetch(`${sys.api.url}/v1/agent/runs/${runId}/state`, { method: 'PUT', headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/gzip', ...headers }, body: archive });
    // Straight to the API (not through the gateway), or as another node: refused.
    assert.equal((await put({})).status, 404);
    assert.equal((await put({ 'x-glider-gateway': secret, 'x-glider-node': 'someone-else' })).status, 404);
    const late = await put({ 'x-glider-gateway': secret, 'x-glider-node': made.node.id });
    assert.equal(late.status, 200, await late.clone().text());
    const stored = (await late.json()) as { version: number; quarantine: string };
    assert.match(stored.quarantine, /had ended \(cancelled\)/);
    // Only its state: its log and result are refused for an ended run.
    const result = await fetch(`${sys.api.url}/v1/agent/runs/${runId}/result`, {
      method: 'POST',
      headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json', 'x-glider-gateway': secret, 'x-glider-node': made.node.id },
      body: JSON.stringify({ exitCode: 0, stopped: false }),
    });
    assert.equal(result.status, 401);

    const dep = await sys.call<{ currentStateVersion: number | null }>('GET', `/v1/deployments/${deployment}`);
    assert.equal(dep.body.currentStateVersion, null, 'a quarantined version never becomes current by itself');
    const versions = await sys.call<{ items: { version: number; quarantine: string | null }[] }>('GET', `/v1/deployments/${deployment}/state-versions`);
    assert.deepEqual(versions.body.items.map((v) => [v.version, v.quarantine !== null]), [[stored.version, true]]);
    // Retention keeps it whatever the limit.
    const { writeStateVersion } = await import('../../core/db/state.js');
    const { SecretBox } = await import('../../core/crypto.js');
    const { loadEncryptionKey } = await import('../../core/keys.js');
    const box = new SecretBox(await loadEncryptionKey({ file: sys.config.security.encryptionKeyFile }));
    for (let i = 0; i < 2; i++) {
      const other = (await sys.call<{ id: string }>('POST', `/v1/deployments/${deployment}/runs`, { action: 'deploy' })).body.id;
      await assertEventually(async () => (await sys.db.query('SELECT 1 FROM runs WHERE id = $1 AND started_at IS NOT NULL', [other])).rows.length === 1);
      await writeStateVersion(sys.db, box, { deploymentId: deployment, runId: other, keep: 1 }, Readable.from([gzipSync(Buffer.from(`run ${i}`))]));
      assert.equal((await sys.call('POST', `/v1/runs/${other}/cancel`)).status, 202);
      await waitForRun(sys.call, other, 60_000);
    }
    const kept = await sys.call<{ items: { version: number; quarantine: string | null }[] }>('GET', `/v1/deployments/${deployment}/state-versions`);
    assert.ok(kept.body.items.some((v) => v.version === stored.version && v.quarantine), 'the quarantined version outlives retention (keep=1)');
    assert.equal(kept.body.items.filter((v) => !v.quarantine).length, 1);

    const promoted = await sys.call<{ version: number; quarantine: string | null }>('POST', `/v1/deployments/${deployment}/state-versions/${stored.version}/rollback`);
    assert.equal(promoted.status, 201);
    assert.equal(promoted.body.quarantine, null);
    assert.equal((await sys.call<{ currentStateVersion: number }>('GET', `/v1/deployments/${deployment}`)).body.currentStateVersion, promoted.body.version);
    const download = await fetch(`${sys.api.url}/v1/deployments/${deployment}/state-versions/${promoted.body.version}/archive`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } });
    assert.deepEqual(Buffer.from(await download.arrayBuffer()), archive);
  });

  it('makes its node CA at first start and keeps it in the data folder', async () => {
    const ca = await readFile(sys.config.nodes.caFile, 'utf8');
    assert.ok(ca.includes(sys.api.nodeCa.certPem.trim()));
    assert.ok(new X509Certificate(sys.api.nodeCa.certPem).ca);
  });
});

async function assertEventually(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 200));
  }
}
