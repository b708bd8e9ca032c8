/**
 * The node gateway (infra/images/gateway) in front of the real Temporal dev server, attacked by hostile clients
 * holding real node certificates, and used by a real activity-only TypeScript worker.
 *
 * The gateway asks a tiny in-test API whether a node is active (GET /v1/gateway/nodes/{id}): Glider Gun's own
 * API is where that answer comes from in production, and the end-to-end node tests use the real one.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { status as grpcStatus } from '@grpc/grpc-js';
import { Context } from '@temporalio/activity';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { after, before, describe, test } from 'node:test';
import { createCa, createKeyAndCsr, signNodeCertificate, type CertificateAuthority } from '../../core/pki.js';
import { ensureGatewayBinary, newTokenKey, startGateway, writeGatewayFiles, writeTokenKeys, type Gateway, type GatewayFiles, type GatewayOptions, type TokenKey } from '../../infra/dev/gateway.js';
import {
  OPERATOR_SERVICE,
  RawGatewayClient,
  WORKFLOW_SERVICE,
  forgeTaskToken,
  historyEventTypes,
  methodsOf,
  pendingActivityIds,
  rawOfEnvelope,
  scheduleActivities,
  sealToken,
  startFakeTemporal,
  temporal,
} from '../support/gateway-clients.js';
import type { GatewayTestActivities, nodeActivities, oneEcho } from '../support/gateway-workflows.js';
import { env, eventually } from '../support/env.js';

const NAMESPACE = 'default';
const WORKFLOWS_PATH = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'support', 'gateway-workflows.ts');
const { TaskQueueKind, TaskQueueType } = temporal.api.enums.v1;
const DAY_MS = 86_400_000;

/** The API's answer about nodes, as the gateway asks it: 200 {id, status}, or 404. */
class StubApi {
  readonly statuses = new Map<string, 'active' | 'revoked'>();
  private server!: http.Server;
  url = '';

  constructor(private readonly secret: string) {}

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const m = /^\/v1\/gateway\/nodes\/([^/]+)$/.exec(req.url ?? '');
      const status = m ? this.statuses.get(decodeURIComponent(m[1]!)) : undefined;
      if (req.headers['x-glider-gateway'] !== this.secret) res.writeHead(401).end();
      else if (!m || !status) res.writeHead(404).end();
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: m[1], status }));
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

interface NodeCert {
  id: string;
  certPem: string;
  keyPem: string;
}

async function nodeCert(ca: CertificateAuthority, id: string, opts: { days?: number; notBefore?: Date } = {}): Promise<NodeCert> {
  const { keyPem, csrPem } = await createKeyAndCsr();
  return { id, keyPem, certPem: await signNodeCertificate(ca, csrPem, id, opts) };
}

const uniqueId = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;

describe('node gateway', { concurrency: true, timeout: 600_000 }, () => {
  let ca: CertificateAuthority;
  let dir: string;
  let files: GatewayFiles;
  let key1: TokenKey;
  let binary: string;
  let api: StubApi;
  let gateway: Gateway;
  let direct: Connection;
  let temporalAddress: string;
  const clients: RawGatewayClient[] = [];
  const gateways: Gateway[] = [];

  /** A node, active in the stub API, with a client of the main gateway. */
  const activeNode = async (prefix: string, on: Gateway = gateway): Promise<NodeCert & { client: RawGatewayClient }> => {
    const cert = await nodeCert(ca, uniqueId(prefix));
    api.statuses.set(cert.id, 'active');
    return { ...cert, client: clientOf(on, cert) };
  };
  const clientOf = (on: Gateway, cert?: { certPem: string; keyPem: string }) => {
    const client = new RawGatewayClient(on.address, { caPem: ca.certPem, ...(cert ? { certPem: cert.certPem, keyPem: cert.keyPem } : {}) });
    clients.push(client);
    return client;
  };
  const gatewayOptions = (tokenKeysFile = files.tokenKeysFile): GatewayOptions => ({
    binary,
    certFile: files.certFile,
    keyFile: files.keyFile,
    clientCaFile: files.clientCaFile,
    temporalAddress,
    namespace: NAMESPACE,
    apiUrl: api.url,
    apiSecretFile: files.apiSecretFile,
    tokenKeysFile,
    // Enumerating every method sends ~140 calls at once: well over the default burst of 100.
    env: { GATEWAY_NODE_RPS: '1000', GATEWAY_NODE_BURST: '1000' },
  });
  const anotherGateway = async (tokenKeysFile?: string) => {
    const g = await startGateway(gatewayOptions(tokenKeysFile));
    gateways.push(g);
    return g;
  };
  /** The gateway's refusals of one node. */
  const refusalsOf = (g: Gateway, node: string) => g.logs().filter((l) => l.msg === 'refused' && l.node === node);
  /** One activity task of the node's queue, polled through the gateway: its (wrapped) token. */
  const pollToken = async (client: RawGatewayClient, node: string): Promise<Buffer> => {
    const r = await client.call(WORKFLOW_SERVICE, 'PollActivityTaskQueue', {
      namespace: NAMESPACE,
      taskQueue: { name: `node-${node}`, kind: TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
      identity: 'test',
    }, {}, 80_000);
    assert.equal(r.code, grpcStatus.OK, r.details);
    const token = r.response?.taskToken as Buffer | undefined;
    assert.ok(token?.length, 'the poll brought a task');
    return token;
  };
  const heartbeat = (client: RawGatewayClient, taskToken: Buffer) =>
    client.call(WORKFLOW_SERVICE, 'RecordActivityTaskHeartbeat', { namespace: NAMESPACE, taskToken, identity: 'test' });
  const complete = (client: RawGatewayClient, taskToken: Buffer) =>
    client.call(WORKFLOW_SERVICE, 'RespondActivityTaskCompleted', { namespace: NAMESPACE, taskToken, identity: 'test' });

  before(async () => {
    temporalAddress = env('GG_TEST_TEMPORAL_ADDRESS');
    dir = await mkdtemp(path.join(os.tmpdir(), 'gg-gateway-'));
    ca = await createCa();
    key1 = newTokenKey(1);
    files = await writeGatewayFiles(dir, ca, { tokenKeys: [key1] });
    binary = await ensureGatewayBinary();
    api = new StubApi(files.apiSecret);
    await api.start();
    gateway = await anotherGateway();
    direct = await Connection.connect({ address: temporalAddress });
    // The node worker of the positive tests: no worker heartbeats (docs/remote-nodes.md).
    Runtime.install({ logger: new DefaultLogger('ERROR'), shutdownSignals: [], workerHeartbeatInterval: 0 });
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(gateways.map((g) => g.stop()));
    await direct?.close();
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('every method outside the allowlist is refused, on WorkflowService, OperatorService and any other service', async () => {
    const a = await activeNode('enum');
    const workflowMethods = methodsOf(WORKFLOW_SERVICE);
    const operatorMethods = methodsOf(OPERATOR_SERVICE);
    assert.ok(workflowMethods.length > 100 && operatorMethods.length > 5, 'the SDK descriptors list the services');
    const results = await Promise.all([
      ...workflowMethods.map(async (m) => ({ m, r: await a.client.call(WORKFLOW_SERVICE, m) })),
      ...operatorMethods.map(async (m) => ({ m: `operator ${m}`, r: await a.client.call(OPERATOR_SERVICE, m) })),
    ]);
    const wrong = results.filter(({ m, r }) => {
      if (m === 'GetSystemInfo') return r.code !== grpcStatus.OK;
      if (m === 'RecordWorkerHeartbeat') return r.code !== grpcStatus.UNIMPLEMENTED;
      // The allowed ones with an empty request name no namespace, queue or token of the node: refused too.
      return r.code !== grpcStatus.PERMISSION_DENIED;
    });
    assert.deepEqual(wrong.map(({ m, r }) => `${m}: ${grpcStatus[r.code]} ${r.details}`), []);
    // Not only the methods the SDK knows: any path, any service.
    for (const p of ['/grpc.health.v1.Health/Check', '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo', `/${WORKFLOW_SERVICE}/NoSuchMethod`]) {
      const r = await a.client.callPath(p);
      assert.equal(r.code, grpcStatus.PERMISSION_DENIED, `${p}: ${grpcStatus[r.code]} ${r.details}`);
    }
    // One refusal line per refused call (the lines arrive through a pipe: wait for the last ones).
    const expected = results.length - 1 + 3;
    await eventually('the refusal lines', () => Promise.resolve(refusalsOf(gateway, a.id).length >= expected ? true : undefined), 5_000).catch(() => undefined);
    const refusals = refusalsOf(gateway, a.id);
    assert.equal(refusals.length, expected, 'one refusal line per refused call');
    assert.ok(refusals.every((l) => typeof l.method === 'string' && typeof l.reason === 'string' && l.reason !== ''));
  });

  test('a node polls only its own queue, in its namespace, of kind normal; headers change nothing', async () => {
    const a = await activeNode('queues');
    const b = await activeNode('queues-b');
    const poll = (taskQueue: Record<string, unknown>, namespace = NAMESPACE, metadata: Record<string, string> = {}) =>
      a.client.call(WORKFLOW_SERVICE, 'PollActivityTaskQueue', { namespace, taskQueue, identity: 'x' }, metadata, 5_000);
    const normal = TaskQueueKind.TASK_QUEUE_KIND_NORMAL;
    const cases: [string, Record<string, unknown>, string?][] = [
      ["node B's queue", { name: `node-${b.id}`, kind: normal }],
      ['a look-alike: a longer id', { name: `node-${a.id}2`, kind: normal }],
      ['a look-alike: a sub-queue', { name: `node-${a.id}/sticky`, kind: normal }],
      ['a look-alike: without the prefix', { name: a.id, kind: normal }],
      ['a look-alike: another case', { name: `NODE-${a.id}`, kind: normal }],
      ['sticky kind', { name: `node-${a.id}`, kind: TaskQueueKind.TASK_QUEUE_KIND_STICKY }],
      ['unspecified kind', { name: `node-${a.id}` }],
      ["a sticky queue whose normal queue is B's", { name: `node-${a.id}`, kind: normal, normalName: `node-${b.id}` }],
      ['another namespace', { name: `node-${a.id}`, kind: normal }, 'temporal-system'],
    ];
    for (const [what, taskQueue, namespace] of cases) {
      const r = await poll(taskQueue, namespace);
      assert.equal(r.code, grpcStatus.PERMISSION_DENIED, `${what}: ${grpcStatus[r.code]} ${r.details}`);
    }
    // Credentials and a namespace in headers: never read by the gateway, never passed to Temporal.
    const hostile = { authorization: 'Bearer admin', 'temporal-namespace': 'temporal-system', 'x-glider-node': b.id };
    const r = await poll({ name: `node-${b.id}`, kind: normal }, NAMESPACE, hostile);
    assert.equal(r.code, grpcStatus.PERMISSION_DENIED, 'headers naming B do not open B\'s queue');
    const described = await a.client.call(WORKFLOW_SERVICE, 'DescribeNamespace', { namespace: NAMESPACE }, hostile);
    assert.equal(described.code, grpcStatus.OK, described.details);
    assert.equal((described.response?.namespaceInfo as { name?: string }).name, NAMESPACE);
    const other = await a.client.call(WORKFLOW_SERVICE, 'DescribeNamespace', { namespace: 'temporal-system' });
    assert.equal(other.code, grpcStatus.PERMISSION_DENIED);
    // Its own queue: an empty poll (Temporal answers it empty just before the deadline, or the deadline ends it).
    const own = await poll({ name: `node-${a.id}`, kind: normal });
    assert.ok([grpcStatus.OK, grpcStatus.DEADLINE_EXCEEDED].includes(own.code), `own queue: ${grpcStatus[own.code]} ${own.details}`);
    assert.equal(own.response?.taskToken, undefined);
  });

  test('nothing a node sends in headers reaches Temporal, and DescribeNamespace is answered reduced', async () => {
    // The dev server ignores `authorization` and `temporal-namespace`, so a made-up frontend shows what arrives.
    // Its answer has both worker capabilities set (the dev server advertises neither).
    const fake = await startFakeTemporal({
      GetSystemInfo: () => ({ serverVersion: 'fake' }),
      DescribeNamespace: () => ({
        namespaceInfo: {
          name: NAMESPACE, state: 1, id: 'ns-id', description: 'internal', ownerEmail: 'ops@example.com',
          capabilities: { workerHeartbeats: true, workerCommands: true, syncUpdate: true },
          limits: { blobSizeLimitError: 2097152 },
        },
        config: { historyArchivalUri: 's3://internal' },
      }),
    });
    const g = await startGateway({ ...gatewayOptions(), temporalAddress: fake.address });
    gateways.push(g);
    const node = await nodeCert(ca, uniqueId('headers'));
    api.statuses.set(node.id, 'active');
    const client = clientOf(g, node);
    const hostile = { authorization: 'Bearer admin', 'temporal-namespace': 'temporal-system', 'x-glider-node': 'other' };
    assert.equal((await client.call(WORKFLOW_SERVICE, 'GetSystemInfo', {}, hostile)).code, grpcStatus.OK);
    const described = await client.call(WORKFLOW_SERVICE, 'DescribeNamespace', { namespace: NAMESPACE }, hostile);
    assert.equal(described.code, grpcStatus.OK, described.details);
    await fake.stop();
    for (const md of fake.headers) {
      for (const name of Object.keys(hostile)) assert.deepEqual(md.get(name), [], `${name} reached Temporal`);
    }
    assert.deepEqual(described.response, {
      namespaceInfo: { name: NAMESPACE, state: 1, id: 'ns-id', capabilities: { syncUpdate: true }, limits: { blobSizeLimitError: 2097152 } },
    });
  });

  test('a forged task token completes an activity on Temporal directly, and is refused by the gateway', async () => {
    const a = await activeNode('forge');
    const described = await direct.workflowService.describeNamespace({ namespace: NAMESPACE });
    const namespaceId = described.namespaceInfo?.id ?? '';
    assert.ok(namespaceId);
    const run = await scheduleActivities(direct, { namespace: NAMESPACE, taskQueue: uniqueId('victim'), activityIds: ['direct', 'through-gateway'] });
    const forged = (activityId: string) => forgeTaskToken({ namespaceId, workflowId: run.workflowId, runId: run.runId, scheduledEventId: 0, attempt: 1, activityId });

    // Straight to Temporal, the forgery works: anyone who knows the ids completes the activity.
    await direct.workflowService.respondActivityTaskCompleted({ namespace: NAMESPACE, taskToken: forged('direct'), identity: 'forger' });
    assert.ok((await historyEventTypes(direct, NAMESPACE, run)).includes('EVENT_TYPE_ACTIVITY_TASK_COMPLETED'), 'the forgery completed the activity');
    assert.deepEqual(await pendingActivityIds(direct, NAMESPACE, run), ['through-gateway']);

    // Through the gateway, the same forgery is refused by the gateway itself (not by Temporal).
    for (const method of ['RespondActivityTaskCompleted', 'RespondActivityTaskFailed', 'RespondActivityTaskCanceled', 'RecordActivityTaskHeartbeat']) {
      const r = await a.client.call(WORKFLOW_SERVICE, method, { namespace: NAMESPACE, taskToken: forged('through-gateway'), identity: 'forger' });
      assert.equal(r.code, grpcStatus.PERMISSION_DENIED, `${method}: ${grpcStatus[r.code]} ${r.details}`);
    }
    assert.deepEqual(await pendingActivityIds(direct, NAMESPACE, run), ['through-gateway'], 'the activity is still open');
    await direct.workflowService.terminateWorkflowExecution({ namespace: NAMESPACE, workflowExecution: { workflowId: run.workflowId }, reason: 'test over' });
  });

  test('tokens: only the node it was handed to, unaltered, unexpired, gets through', async () => {
    const a = await activeNode('tokens');
    const b = await activeNode('tokens-b');
    const runA = await scheduleActivities(direct, { namespace: NAMESPACE, taskQueue: `node-${a.id}`, activityIds: ['a1'] });
    const runB = await scheduleActivities(direct, { namespace: NAMESPACE, taskQueue: `node-${b.id}`, activityIds: ['b1'] });
    const tokenA = await pollToken(a.client, a.id);
    const tokenB = await pollToken(b.client, b.id);
    assert.equal(tokenA[0], 0x01, 'the node gets an envelope');
    assert.notEqual(tokenA.subarray(0, 10).toString(), 'local_act_');

    const refused = async (what: string, token: Buffer) => {
      for (const call of [heartbeat, complete]) {
        const r = await call(a.client, token);
        assert.equal(r.code, grpcStatus.PERMISSION_DENIED, `${what}: ${grpcStatus[r.code]} ${r.details}`);
      }
    };
    await refused("node B's token", tokenB);
    await refused('the raw token inside the envelope', rawOfEnvelope(tokenA));
    for (const at of [0, 1, 5, 12, tokenA.length - 40, tokenA.length - 1]) {
      const flipped = Buffer.from(tokenA);
      flipped[at]! ^= 0x04;
      await refused(`a bit flipped at byte ${at}`, flipped);
    }
    await refused('cut by one byte', tokenA.subarray(0, tokenA.length - 1));
    await refused('cut to its header', tokenA.subarray(0, 10));
    await refused('empty', Buffer.alloc(0));
    await refused('oversized', Buffer.concat([tokenA, Buffer.alloc(9000)]));
    // Sealed with the gateway's own key, for A, but expired: refused; the same sealed to expire later passes.
    await refused('expired', sealToken(key1.key, key1.id, a.id, rawOfEnvelope(tokenA), new Date(Date.now() - 60_000)));
    const resealed = await heartbeat(a.client, sealToken(key1.key, key1.id, a.id, rawOfEnvelope(tokenA), new Date(Date.now() + 60_000)));
    assert.equal(resealed.code, grpcStatus.OK, resealed.details);
    assert.equal(refusalsOf(gateway, b.id).length, 0);

    // B's own token works for B, A's for A: the refusals above were about who sent them.
    assert.equal((await complete(b.client, tokenB)).code, grpcStatus.OK);
    const done = await complete(a.client, tokenA);
    assert.equal(done.code, grpcStatus.OK, done.details);
    const history = await direct.workflowService.getWorkflowExecutionHistory({ namespace: NAMESPACE, execution: { workflowId: runA.workflowId } });
    const identities = (history.history?.events ?? []).flatMap((e) => [e.activityTaskStartedEventAttributes?.identity, e.activityTaskCompletedEventAttributes?.identity]).filter(Boolean);
    assert.deepEqual(identities, [`node:${a.id}`, `node:${a.id}`], 'history names the node from its certificate, not the identity it sent');
    for (const run of [runA, runB]) await direct.workflowService.terminateWorkflowExecution({ namespace: NAMESPACE, workflowExecution: { workflowId: run.workflowId }, reason: 'test over' });
  });

  test('key rotation: a token survives a restart and one rotation, not a second', async () => {
    const keysFile = path.join(dir, `keys-${randomUUID()}`);
    const [k1, k2, k3] = [newTokenKey(11), newTokenKey(12), newTokenKey(13)];
    const node = await nodeCert(ca, uniqueId('rotation'));
    api.statuses.set(node.id, 'active');
    const run = await scheduleActivities(direct, { namespace: NAMESPACE, taskQueue: `node-${node.id}`, activityIds: ['r1', 'r2'] });

    await writeTokenKeys(keysFile, [k1]);
    let g = await anotherGateway(keysFile);
    const token1 = await pollToken(clientOf(g, node), node.id);
    assert.equal(token1[1], k1.id);
    await g.stop();

    await writeTokenKeys(keysFile, [k2, k1]);
    g = await anotherGateway(keysFile);
    assert.equal((await heartbeat(clientOf(g, node), token1)).code, grpcStatus.OK, 'accepted after a restart with the previous key second');
    const token2 = await pollToken(clientOf(g, node), node.id);
    assert.equal(token2[1], k2.id, 'the first line signs');
    await g.stop();

    await writeTokenKeys(keysFile, [k3, k2]);
    g = await anotherGateway(keysFile);
    const client = clientOf(g, node);
    const retired = await heartbeat(client, token1);
    assert.equal(retired.code, grpcStatus.PERMISSION_DENIED, `retired key: ${grpcStatus[retired.code]} ${retired.details}`);
    assert.equal((await heartbeat(client, token2)).code, grpcStatus.OK);
    await g.stop();
    await direct.workflowService.terminateWorkflowExecution({ namespace: NAMESPACE, workflowExecution: { workflowId: run.workflowId }, reason: 'test over' });
  });

  test('ShutdownWorker only for the node\'s own activity queue', async () => {
    const a = await activeNode('shutdown');
    const b = await activeNode('shutdown-b');
    const shutdown = (req: Record<string, unknown>, metadata: Record<string, string> = {}) =>
      a.client.call(WORKFLOW_SERVICE, 'ShutdownWorker', { namespace: NAMESPACE, identity: 'x', workerInstanceKey: randomUUID(), ...req }, metadata);
    const activity = [TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY];
    for (const [what, req] of [
      ["B's queue", { taskQueue: `node-${b.id}`, taskQueueTypes: activity }],
      ["B's queue, with headers naming B", { taskQueue: `node-${b.id}`, taskQueueTypes: activity }],
      ['a sticky queue', { taskQueue: `node-${a.id}`, stickyTaskQueue: `node-${b.id}`, taskQueueTypes: activity }],
      ['workflow polls', { taskQueue: `node-${a.id}`, taskQueueTypes: [TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW] }],
      ['every type', { taskQueue: `node-${a.id}` }],
    ] as const) {
      const r = await shutdown(req, { 'x-glider-node': b.id, authorization: 'Bearer admin' });
      assert.equal(r.code, grpcStatus.PERMISSION_DENIED, `${what}: ${grpcStatus[r.code]} ${r.details}`);
    }
    const own = await shutdown({ taskQueue: `node-${a.id}`, taskQueueTypes: activity });
    assert.equal(own.code, grpcStatus.OK, own.details);
  });

  test('certificates: none, another CA\'s, an expired one, and a node revoked on an open connection are refused', async () => {
    const call = (client: RawGatewayClient) => client.call(WORKFLOW_SERVICE, 'GetSystemInfo');
    const none = await call(clientOf(gateway));
    assert.equal(none.code, grpcStatus.UNAUTHENTICATED, `none: ${grpcStatus[none.code]} ${none.details}`);

    const id = uniqueId('certs');
    api.statuses.set(id, 'active');
    const foreign = await nodeCert(await createCa({ commonName: 'someone else' }), id);
    const viaForeign = await call(clientOf(gateway, foreign));
    assert.equal(viaForeign.code, grpcStatus.UNAVAILABLE, `another CA: ${grpcStatus[viaForeign.code]} ${viaForeign.details}`);
    const expired = await nodeCert(ca, id, { days: 0, notBefore: new Date(Date.now() - 2 * DAY_MS) });
    const viaExpired = await call(clientOf(gateway, expired));
    assert.equal(viaExpired.code, grpcStatus.UNAVAILABLE, `expired: ${grpcStatus[viaExpired.code]} ${viaExpired.details}`);

    const unknown = await call(clientOf(gateway, await nodeCert(ca, uniqueId('never-enrolled'))));
    assert.equal(unknown.code, grpcStatus.PERMISSION_DENIED, `unknown node: ${grpcStatus[unknown.code]}`);

    const valid = clientOf(gateway, await nodeCert(ca, id));
    assert.equal((await call(valid)).code, grpcStatus.OK);
    api.statuses.set(id, 'revoked');
    const revoked = await call(valid);
    assert.equal(revoked.code, grpcStatus.PERMISSION_DENIED, `revoked: ${grpcStatus[revoked.code]} ${revoked.details}`);
    const r = await valid.call(WORKFLOW_SERVICE, 'PollActivityTaskQueue', { namespace: NAMESPACE, taskQueue: { name: `node-${id}`, kind: TaskQueueKind.TASK_QUEUE_KIND_NORMAL } });
    assert.equal(r.code, grpcStatus.PERMISSION_DENIED, 'its own queue too');
    assert.equal(valid.state(), 2 /* READY: the same connection, still open */);
  });

  describe('a real activity-only worker through the gateway', { concurrency: true, timeout: 600_000 }, () => {
    let workflowBundle: { code: string };
    const quiet = () => undefined;

    before(async () => {
      workflowBundle = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: { log: quiet, trace: quiet, debug: quiet, info: quiet, warn: quiet, error: quiet } });
    });

    /** A worker of the node's queue, connected through `through` with the node's certificate, and no workflows. */
    const nodeWorker = async (through: Gateway, node: NodeCert, activities: GatewayTestActivities) => {
      const connection = await NativeConnection.connect({
        address: through.address,
        tls: { serverRootCACertificate: Buffer.from(ca.certPem), clientCertPair: { crt: Buffer.from(node.certPem), key: Buffer.from(node.keyPem) }, serverNameOverride: 'localhost' },
      });
      const worker = await Worker.create({ connection, namespace: NAMESPACE, taskQueue: `node-${node.id}`, activities });
      return { connection, worker };
    };
    /** The workflows' own worker, straight to Temporal, on a queue of its own. */
    const workflowWorker = async () => {
      const connection = await NativeConnection.connect({ address: temporalAddress });
      const taskQueue = uniqueId('gateway-workflows');
      const worker = await Worker.create({ connection, namespace: NAMESPACE, taskQueue, workflowBundle });
      return { connection, worker, taskQueue };
    };

    test('runs, heartbeats, fails and is retried, is cancelled, and shuts down cleanly', async () => {
      const node = await activeNode('worker');
      const seen = { attempts: new Map<string, number>(), cancelled: false };
      const count = (name: string) => seen.attempts.set(name, (seen.attempts.get(name) ?? 0) + 1);
      const activities: GatewayTestActivities = {
        echo: (value) => (count('echo'), Promise.resolve(value)),
        heartbeating: async (beats) => {
          count('heartbeating');
          const ctx = Context.current();
          // The first attempt heartbeats its progress and fails; the retry reads it back from Temporal.
          if (ctx.info.attempt === 1) {
            ctx.heartbeat(beats);
            await ctx.sleep(1000);
            throw new Error('first attempt fails after its heartbeat');
          }
          return ctx.info.heartbeatDetails as number;
        },
        flaky: () => {
          count('flaky');
          const { attempt } = Context.current().info;
          return attempt === 1 ? Promise.reject(new Error('the first attempt fails')) : Promise.resolve(attempt);
        },
        untilCancelled: async () => {
          const ctx = Context.current();
          const beat = setInterval(() => ctx.heartbeat(), 200);
          try {
            await ctx.cancelled;
          } catch (err) {
            seen.cancelled = true;
            throw err;
          } finally {
            clearInterval(beat);
          }
        },
      };
      const nw = await nodeWorker(gateway, node, activities);
      const ww = await workflowWorker();
      const client = new Client({ connection: direct, namespace: NAMESPACE });
      const workflowId = uniqueId('gateway-node-activities');
      const nodeRun = nw.worker.run();
      try {
        const result = await ww.worker.runUntil(
          client.workflow.execute<typeof nodeActivities>('nodeActivities', { taskQueue: ww.taskQueue, workflowId, args: [`node-${node.id}`], workflowExecutionTimeout: '2 minutes' }),
        );
        assert.deepEqual(result, { echoed: 'through the gateway', heartbeats: 3, flakyAttempt: 2, cancelled: true });
        assert.ok(seen.cancelled, 'the activity saw its cancellation');
        assert.deepEqual(Object.fromEntries(seen.attempts), { echo: 1, heartbeating: 2, flaky: 2 });
      } finally {
        nw.worker.shutdown();
        await nodeRun;
        await nw.connection.close();
        await ww.connection.close();
      }
      assert.equal(nw.worker.getState(), 'STOPPED');
      const history = await client.workflow.getHandle(workflowId).fetchHistory();
      const identities = new Set((history.events ?? []).map((e) => e.activityTaskStartedEventAttributes?.identity).filter(Boolean));
      assert.deepEqual([...identities], [`node:${node.id}`]);
      assert.deepEqual(refusalsOf(gateway, node.id), [], 'the SDK called nothing the gateway refuses');
    });

    test('an idle worker stays connected for minutes and still gets a task', { timeout: 420_000 }, async () => {
      // A gateway of its own: its connection lines are this worker's alone.
      const own = await anotherGateway();
      const node = await activeNode('idle', own);
      const nw = await nodeWorker(own, node, { echo: (v) => Promise.resolve(v), heartbeating: () => Promise.resolve(0), flaky: () => Promise.resolve(0), untilCancelled: () => Promise.resolve() });
      const nodeRun = nw.worker.run();
      const ww = await workflowWorker();
      try {
        const idleMinutes = Number(process.env.GG_TEST_GATEWAY_IDLE_MINUTES ?? 4);
        await new Promise((r) => setTimeout(r, idleMinutes * 60_000));
        const client = new Client({ connection: direct, namespace: NAMESPACE });
        const echoed = await ww.worker.runUntil(
          client.workflow.execute<typeof oneEcho>('oneEcho', { taskQueue: ww.taskQueue, workflowId: uniqueId('gateway-idle'), args: [`node-${node.id}`, 'still here'], workflowExecutionTimeout: '1 minute' }),
        );
        assert.equal(echoed, 'still here');
      } finally {
        nw.worker.shutdown();
        await nodeRun;
        await nw.connection.close();
        await ww.connection.close();
      }
      const connections = own.logs().filter((l) => l.msg === 'connected');
      assert.equal(connections.length, 1, `one connection for the whole time, not a reconnect: ${JSON.stringify(own.logs().filter((l) => l.msg !== 'refused'))}`);
      assert.deepEqual(refusalsOf(own, node.id), []);
    });
  });
});
