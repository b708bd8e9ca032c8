/**
 * A remote node end to end (docs/remote-nodes.md): a node created through the API enrols with
 * `npm run node-worker -- enrol` and then runs as a process of its own, with no database and no address but
 * the gateway's. It runs a deployment to success (log, outputs, secrets opened with its own key, state),
 * listens on no TCP port, connects by itself when the gateway comes up after it, and carries on when the
 * gateway restarts while it is idle.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { WORKDIR_LABEL } from '../../activities/execution/adapter.js';
import { freePort } from '../../infra/dev/ports.js';
import { startGatewayProcess, type Gateway } from '../../workers/gateway-process.js';
import { NODE_VERSION } from '../../workers/node.js';
import { readNodeIdentity, writeNodeIdentity } from '../../workers/node-identity.js';
import { certificateNotAfter, createKeyAndCsr, signNodeCertificate } from '../../core/pki.js';
import { EXAMPLE_PARAMETERS, createDeployment, uniqueName, waitForRun, type RunBody } from '../support/fixtures.js';
import { nodeWorker, remoteNodeEnv } from '../support/remote-node.js';
import { SECRETS_ROOT, env, eventually, images, startTestSystem, type TestSystem } from '../support/system.js';

/** The TCP sockets in LISTEN state that a process (and its children) holds: its fds' socket inodes found in /proc/net/tcp{,6}. */
async function listeningPortsOf(pid: number): Promise<{ sockets: number; listening: string[] }> {
  const pids = [pid];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (pids.includes(ppid)) pids.push(Number(entry));
  }
  const inodes = new Set<string>();
  for (const p of pids) {
    for (const fd of await readdir(`/proc/${p}/fd`).catch(() => [])) {
      const target = await readlink(`/proc/${p}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m) inodes.add(m[1]!);
    }
  }
  const listening: string[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of (await readFile(table, 'utf8')).split('\n').slice(1)) {
      const cols = row.trim().split(/\s+/);
      // local_address is cols[1]; st is cols[3] (0A: LISTEN); inode is cols[9].
      if (cols[3] === '0A' && inodes.has(cols[9] ?? '')) listening.push(`${table}:${cols[1]}`);
    }
  }
  return { sockets: inodes.size, listening };
}

describe('a remote node: its own process, reaching nothing but the gateway', () => {
  let sys: TestSystem;
  let gateway: Gateway | undefined;
  let listen: string;
  let nodeId: string;
  let dir: string;
  let worker: ReturnType<typeof nodeWorker> | undefined;
  let template: string;
  let deploymentId: string;
  const suffix = randomBytes(3).toString('hex');
  const secretsDir = `${SECRETS_ROOT}/rn-${suffix}`;
  const password = `pw-${randomBytes(6).toString('hex')}`;

  const startGateway = async () => {
    gateway = await startGatewayProcess({ config: sys.config, ca: sys.api.nodeCa, apiUrl: sys.api.url, listen });
  };
  const stopGateway = async () => {
    await gateway?.stop();
    gateway = undefined;
  };
  /** Only what a node has: no DATABASE_URL, no TEMPORAL_ADDRESS, no API address. */
  const nodeEnv = (): NodeJS.ProcessEnv =>
    // Heartbeats every second: the restart of the gateway falls between two of them.
    remoteNodeEnv(secretsDir, { GLIDERGUN_NODE_HEARTBEAT_SECONDS: '1' });
  const deploy = async (action = 'deploy'): Promise<RunBody> => {
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action });
    assert.ok(run.status === 201 || run.status === 202, JSON.stringify(run.body));
    return waitForRun(sys.call, run.body.id);
  };
  const saidSince = (from: number, pattern: RegExp) => eventually(`the node to say ${pattern}`, () => Promise.resolve(worker!.lines.slice(from).some((l) => pattern.test(l)) ? true : undefined), 60_000);

  before(async () => {
    // The test system's own built-in node is not started: the only worker on this node's queue is the child.
    sys = await startTestSystem({ nodeWorker: false });
    listen = `127.0.0.1:${await freePort()}`;
    await startGateway();
    dir = path.join(env('GG_TEST_SCRATCH'), `rn-${suffix}`);
    await mkdir(dir, { recursive: true });
    template = uniqueName('remote');
    assert.equal((await sys.call('POST', '/v1/templates', { name: template })).status, 201);
    const version = await sys.call('POST', `/v1/templates/${template}/versions`, {
      image: images.example,
      tfVars: true,
      parameters: [...EXAMPLE_PARAMETERS, { name: 'password', type: 'string', sensitive: true, required: true }],
    });
    assert.equal(version.status, 201, JSON.stringify(version.body));
  });
  after(async () => {
    if (worker && worker.child.exitCode === null) {
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
    await stopGateway().catch(() => undefined);
    await sys.stop();
    await rm(dir, { recursive: true, force: true });
    if (process.env.GG_TEST_NODE_LOG) console.log(worker?.lines.join('\n'));
  });

  it('enrols with a one-time token, trusting only the CA it was given, and keeps its keys to itself', async () => {
    nodeId = `r${suffix}`;
    const created = await sys.call<{ node: { id: string }; enrolment: { token: string; caCertificate: string } }>('POST', '/v1/nodes', { name: nodeId, labels: { site: 'test' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const caFile = path.join(dir, 'given-ca.pem');
    await writeFile(caFile, created.body.enrolment.caCertificate);
    const enrol = nodeWorker(['enrol', '--gateway', gateway!.address, '--ca', caFile, '--token', created.body.enrolment.token, '--dir', path.join(dir, 'id')], nodeEnv());
    assert.equal(await enrol.exited, 0, enrol.lines.join('\n'));
    assert.ok(enrol.lines.some((l) => l.includes(`enrolled as node '${nodeId}'`)), enrol.lines.join('\n'));
    const again = nodeWorker(['enrol', '--gateway', gateway!.address, '--ca', caFile, '--token', created.body.enrolment.token, '--dir', path.join(dir, 'again')], nodeEnv());
    assert.equal(await again.exited, 1, 'the token works once');
    assert.ok(again.lines.some((l) => /ENROLMENT_REFUSED/.test(l)), again.lines.join('\n'));
  });

  it('connects by itself once the gateway comes up after it', async () => {
    await stopGateway();
    worker = nodeWorker(['--dir', path.join(dir, 'id')], nodeEnv());
    await saidSince(0, /cannot reach Temporal through the gateway/);
    await startGateway();
    await saidSince(0, new RegExp(`node '${nodeId}' polls task queue node-${nodeId}`));
  });

  it('runs a deployment to success: its log, outputs, state, and secrets opened with the node\'s own key', async () => {
    deploymentId = await createDeployment(sys.call, template, { message: 'from afar', password }, { kind: 'node', node: nodeId });
    const run = await deploy();
    assert.equal(run.status, 'succeeded', JSON.stringify(run));
    assert.equal(run.outputs?.message, 'from afar');
    assert.equal(run.outputs?.runCount, 1);
    assert.notEqual(run.stateVersion, null, 'its /state was stored');
    const secretsFile = `${JSON.stringify({ password }, null, 2)}\n`;
    assert.equal(run.outputs?.secretsSha256, createHash('sha256').update(secretsFile).digest('hex'), 'the template read the secrets the node opened');
    const log = await fetch(`${sys.api.url}/v1/runs/${run.id}/logs`, { headers: { authorization: `Bearer ${sys.tokens.viewer}` } });
    assert.equal(log.status, 200);
    const text = await log.text();
    assert.match(text, new RegExp(`example template: action=deploy deployment=${deploymentId} run=${run.id}`));
    assert.ok(!text.includes(password), 'no secret in the log');
    // The heartbeat: version, capacity, online.
    const seen = await eventually('the node\'s heartbeat', async () => {
      const node = (await sys.call<{ connection: string; version: string | null; capacity: number | null }>('GET', `/v1/nodes/${nodeId}`)).body;
      return node.version ? node : undefined;
    });
    assert.deepEqual({ connection: seen.connection, version: seen.version, capacity: seen.capacity }, { connection: 'online', version: NODE_VERSION, capacity: 20 });
  });

  it('renews its certificate when a third of its lifetime is left, and moves its running worker onto it without a restart', async () => {
    // The worker again, with a certificate that falls due 10 s after it starts.
    worker!.child.kill('SIGTERM');
    assert.equal(await worker!.exited, 0, 'it stopped cleanly on SIGTERM');
    const idDir = path.join(dir, 'id');
    const identity = await readNodeIdentity(idDir);
    const { keyPem, csrPem } = await createKeyAndCsr();
    const lifetime = 3 * 86_400_000 + 5 * 60_000; // signNodeCertificate: days, plus its 5 minutes' backdating
    const notBefore = new Date(Date.now() + 10_000 - (2 * lifetime) / 3);
    const dueSoon = await signNodeCertificate(sys.api.nodeCa, csrPem, nodeId, { days: 3, notBefore });
    await writeNodeIdentity(idDir, { ...identity, certPem: dueSoon, keyPem });
    worker = nodeWorker(['--dir', idDir], nodeEnv());
    await saidSince(0, new RegExp(`node '${nodeId}' polls task queue`));
    await saidSince(0, /renewed this node's certificate/);
    await saidSince(0, /the worker moved onto a connection with the renewed certificate, without a restart/);
    const renewed = await readNodeIdentity(idDir);
    assert.notEqual(renewed.certPem, dueSoon);
    assert.ok(certificateNotAfter(renewed.certPem).getTime() > Date.now() + 20 * 86_400_000, 'a certificate of the full lifetime');
    assert.equal(renewed.sealingKeyPem, identity.sealingKeyPem);
    // The moved worker takes runs (and its heartbeats go through the new connection).
    const run = await deploy();
    assert.equal(run.status, 'succeeded', JSON.stringify(run));
    assert.equal(run.outputs?.runCount, 2);
  });

  it('listens on no TCP port', async () => {
    const pid = worker!.child.pid!;
    assert.equal(worker!.child.exitCode, null, 'the node worker is running');
    const held = await listeningPortsOf(pid);
    assert.ok(held.sockets > 0, 'the node worker holds sockets (its connections to the gateway): the check looks at the right process');
    assert.deepEqual(held.listening, [], 'none of them is a listening TCP socket');
    // The check sees listeners where there are some: this process serves the API.
    assert.ok((await listeningPortsOf(process.pid)).listening.length > 0, 'the check finds this process\'s own API listener');
  });

  it('carries on by itself when the gateway restarts while it is idle, and runs the next run', async () => {
    const pid = worker!.child.pid;
    await stopGateway();
    const from = worker!.lines.length;
    await saidSince(from, /heartbeat to the node API failed/);
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    await startGateway();
    const restarted = Date.now();
    await eventually('a heartbeat through the restarted gateway', async () => {
      const node = (await sys.call<{ lastSeenAt: string | null }>('GET', `/v1/nodes/${nodeId}`)).body;
      return node.lastSeenAt && Date.parse(node.lastSeenAt) > restarted ? true : undefined;
    });
    const run = await deploy();
    assert.equal(run.status, 'succeeded', JSON.stringify(run));
    assert.equal(run.outputs?.runCount, 3, 'the state of the run before was restored');
    assert.equal(worker!.child.pid, pid);
    assert.equal(worker!.child.exitCode, null, 'the same process, never restarted');
    // The runs' containers are removed by the node (cleanupRun through the gateway).
    await eventually('the node\'s containers to be removed', async () => {
      const left = await sys.docker.listContainers({ all: true, filters: { label: [`${WORKDIR_LABEL}=${path.join(dir, 'id', 'work')}`] } });
      return left.length === 0 ? true : undefined;
    });
  });

  it('stops with a clear message once it is revoked: every call it makes is refused, on its open connections too', async () => {
    const from = worker!.lines.length;
    const revoked = await sys.call<{ status: string }>('POST', `/v1/nodes/${nodeId}/revoke`);
    assert.equal(revoked.body.status, 'revoked');
    // The next heartbeat (every second here) is refused by the gateway on the connection already open.
    const code = await Promise.race([worker!.exited, sleep(30_000, 'still running' as const, { ref: false })]);
    assert.equal(code, 1, 'the node exits with an error');
    assert.ok(worker!.lines.slice(from).some((l) => /was revoked: .*enrol this machine again/.test(l)), worker!.lines.slice(from).join('\n'));
    assert.equal((await sys.call<{ connection: string }>('GET', `/v1/nodes/${nodeId}`)).body.connection, 'revoked');
  });
});
