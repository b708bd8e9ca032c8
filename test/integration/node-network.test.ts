/**
 * A remote node behind a bad network: the node (`npm run node-worker`, its own process) runs in a network
 * namespace of its own whose one way out is a veth pair to a gateway of this test's own (test/support/netns.ts).
 * Its Docker engine is the host's (a unix socket: the namespace does not touch it), so its containers go on
 * whatever happens to the link.
 *
 * - The link is cut (every packet dropped, nobody told) for 60 s in the middle of a run, then restored.
 * - The gateway is stopped in the middle of a run and a new one started on the same address and port.
 * Each time the run completes with its log whole (every line once, in order), in the one container it
 * started in, and the node carries on by itself: it says so, and takes the next run without a restart.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WORKDIR_LABEL } from '../../activities/execution/adapter.js';
import type { Gateway } from '../../infra/dev/gateway.js';
import { createDeployment, waitForExecuting, waitForRun, type RunBody } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { createIsolatedNetwork, probeTcp, type IsolatedNetwork } from '../support/netns.js';
import { createAndEnrolNode, nodeWorker, remoteNodeEnv, startOwnGateway, type NodeProcess } from '../support/remote-node.js';
import { SECRETS_ROOT, env, eventually, startTestSystem, type TestSystem } from '../support/system.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A template that prints `line 1` … `line <TF_VAR_lines>`, one every ~100 ms, and counts its runs in /state (outputs.runCount). */
const COUNTING_SCRIPT = `#!/bin/sh
runs=$(cat /state/run-count 2>/dev/null || echo 0)
runs=$((runs + 1))
echo "$runs" > /state/run-count
i=1
while [ "$i" -le "$TF_VAR_lines" ]; do echo "line $i"; i=$((i + 1)); sleep 0.1; done
echo "{\\"runCount\\": $runs}" > /state/outputs.json
`;

const expectedLines = (lines: number): string => Array.from({ length: lines }, (_, i) => `line ${i + 1}\n`).join('');
const lastLine = (text: string): number => Number([...text.matchAll(/line (\d+)\n/g)].at(-1)?.[1] ?? 0);

describe('a remote node in a network namespace of its own, behind a link that breaks', () => {
  let sys: TestSystem;
  let net: IsolatedNetwork;
  let gateway: Gateway | undefined;
  let listen: string;
  let node: NodeProcess | undefined;
  let nodeId: string;
  let template: string;
  let probeServer: Server | undefined;
  const suffix = randomBytes(3).toString('hex');
  /** Where the node's output stood when each outage was over (`back`) and when its test had seen the next run succeed (`end`). */
  const outages: { what: string; back: number; end?: number }[] = [];
  const dir = path.join(env('GG_TEST_SCRATCH'), `nn-${suffix}`);
  const nodeEnvironment = () =>
    remoteNodeEnv(`${SECRETS_ROOT}/nn-${suffix}`, {
      // Heartbeats every 2 s: the node API's way back is seen soon after the link is.
      GLIDERGUN_NODE_HEARTBEAT_SECONDS: '2',
    });

  const storedStdout = async (runId: string): Promise<string> => {
    const res = await fetch(`${sys.api.url}/v1/runs/${runId}/logs?stream=stdout`, { headers: { authorization: `Bearer ${sys.tokens.viewer}` } });
    assert.equal(res.status, 200);
    return res.text();
  };
  const engineStdout = async (containerId: string): Promise<string> =>
    (await sys.docker.getContainer(containerId).logs({ stdout: true, stderr: false, follow: false })).toString('latin1');
  /** Every container the run ever had, looked for every 250 ms until stop(). */
  const watchContainers = (runId: string) => {
    const seen = new Set<string>();
    let stopped = false;
    const filters = { label: [`io.glider-gun.run=${runId}`] };
    const looking = (async () => {
      while (!stopped) {
        for (const c of await sys.docker.listContainers({ all: true, filters }).catch(() => [])) seen.add(c.Id);
        await sleep(250);
      }
    })();
    return {
      seen,
      first: () => eventually('the run\'s container', () => Promise.resolve([...seen][0]), 60_000),
      stop: async () => {
        stopped = true;
        await looking;
        return [...seen];
      },
    };
  };
  const startRun = async (deploymentId: string): Promise<string> => {
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
    assert.equal(run.status, 202, JSON.stringify(run.body));
    return run.body.id;
  };
  /** A short run on the same node, after the trouble: the node takes work again without having been restarted. */
  const nextRunSucceeds = async (pid: number | undefined) => {
    const runId = await startRun(await createDeployment(sys.call, template, { lines: 20 }, { kind: 'node', node: nodeId }));
    const run = await waitForRun(sys.call, runId, 120_000);
    assert.equal(run.status, 'succeeded', JSON.stringify(run));
    assert.equal(await storedStdout(runId), expectedLines(20));
    assert.equal(node!.child.pid, pid);
    assert.equal(node!.child.exitCode, null, 'the same node process, never restarted');
    await nodeContainersRemoved();
  };
  /** The node removes its runs' containers (cleanupRun through the gateway) once their outcomes are recorded. */
  const nodeContainersRemoved = () =>
    eventually('the node\'s containers to be removed', async () => {
      const left = await sys.docker.listContainers({ all: true, filters: { label: [`${WORKDIR_LABEL}=${path.join(dir, 'id', 'work')}`] } });
      return left.length === 0 ? true : undefined;
    }, 30_000);

  before(async () => {
    // Only the child process serves this node's queue; the system's built-in node is left stopped.
    sys = await startTestSystem({ nodeWorker: false });
    net = await createIsolatedNetwork();
    await mkdir(dir, { recursive: true });
    gateway = await startOwnGateway(sys, `${net.hostAddress}:0`, path.join(dir, 'gateway'));
    listen = gateway.address;
    await net.allowOnly(Number(listen.slice(listen.lastIndexOf(':') + 1)));
    template = `netcut-${suffix}`;
    assert.equal((await sys.call('POST', '/v1/templates', { name: template })).status, 201);
    const version = await sys.call('POST', `/v1/templates/${template}/versions`, {
      image: await scriptImage(sys.docker, COUNTING_SCRIPT),
      tfVars: true,
      parameters: [{ name: 'lines', type: 'integer', required: true }],
    });
    assert.equal(version.status, 201, JSON.stringify(version.body));
  });
  after(async () => {
    // A test that failed may leave a run whose container the node would still remove.
    await nodeContainersRemoved().catch(() => undefined);
    await node?.stop();
    if (process.env.GG_TEST_NODE_LOG) console.log(node?.lines.join('\n'));
    await net?.destroy();
    await gateway?.stop();
    await new Promise((r) => (probeServer ? probeServer.close(r) : r(undefined)));
    await sys?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('reaches the gateway from inside the namespace, and nothing else: not the host\'s 127.0.0.1, its other addresses or its other ports', async () => {
    const port = (address: string) => Number(address.slice(address.lastIndexOf(':') + 1));
    // A server of this test's own on every address of the host: reachable from the host, not from the namespace.
    probeServer = createServer((s) => s.destroy());
    await new Promise<void>((r) => probeServer!.listen(0, '0.0.0.0', r));
    const probePort = (probeServer.address() as { port: number }).port;
    assert.equal(await probeTcp(null, net.hostAddress, probePort), 'connected', 'the probe connects where a route and no rule stand in the way (here, from the host)');

    assert.equal(await probeTcp(net, net.hostAddress, port(listen)), 'connected', 'the gateway answers');
    assert.equal(await probeTcp(net, net.hostAddress, probePort), 'ECONNREFUSED', 'another port on the gateway\'s address is refused');
    assert.equal(await probeTcp(net, '127.0.0.1', Number(new URL(sys.api.url).port)), 'ECONNREFUSED', 'the API on 127.0.0.1: the namespace has a loopback of its own');
    assert.equal(await probeTcp(net, '127.0.0.1', port(sys.config.temporal.address)), 'ECONNREFUSED', 'Temporal on 127.0.0.1');
    assert.equal(await probeTcp(net, '127.0.0.1', Number(new URL(env('GG_TEST_DATABASE_URL')).port || 5432)), 'ECONNREFUSED', 'Postgres on 127.0.0.1');
    const others = Object.values(os.networkInterfaces())
      .flat()
      .filter((a) => a && a.family === 'IPv4' && !a.internal && a.address !== net.hostAddress)
      .map((a) => a!.address);
    assert.ok(others.length > 0, 'the host has other addresses to try');
    for (const address of others) assert.equal(await probeTcp(net, address, probePort), 'ENETUNREACH', `the host's ${address}: no route`);
  });

  it('enrols through its gateway from inside the namespace and polls its queue', async () => {
    nodeId = await createAndEnrolNode(sys, { name: `nn${suffix}`, gateway: listen, dir, environment: nodeEnvironment(), network: net });
    node = nodeWorker(['--dir', path.join(dir, 'id')], nodeEnvironment(), { network: net });
    await node.saidSince(0, new RegExp(`node '${nodeId}' polls task queue node-${nodeId} through the gateway at ${listen.replace(/\./g, '\\.')}`));
  });

  it('finishes a run whose link was cut for 60 s in its middle: one container, the log whole, the node back by itself', async () => {
    const lines = 900; // ~95 s: the template prints all through the cut and for ~30 s after it
    const deploymentId = await createDeployment(sys.call, template, { lines }, { kind: 'node', node: nodeId });
    const runId = await startRun(deploymentId);
    const containers = watchContainers(runId);
    try {
      await waitForExecuting(sys.call, runId, 60_000);
      const first = await containers.first();
      await eventually('the first lines to be stored', async () => (lastLine(await storedStdout(runId)) >= 30 ? true : undefined), 60_000);

      const pid = node!.child.pid;
      await net.cut();
      const atCut = lastLine(await engineStdout(first));
      await sleep(60_000);
      // The run waited for its node: still running, and so is its template, which printed all along.
      const meanwhile = (await sys.call<RunBody>('GET', `/v1/runs/${runId}`)).body;
      assert.equal(meanwhile.status, 'running', `the run waits for its node through the cut: ${JSON.stringify(meanwhile)}`);
      const atRestore = lastLine(await engineStdout(first));
      assert.ok(atRestore >= atCut + 400 && atRestore < lines, `the template printed through the cut and is still printing (line ${atCut} → ${atRestore})`);
      const restoredAt = Date.now();
      await net.restore();
      outages.push({ what: 'the 60 s cut', back: node!.lines.length });

      // Back by itself: its heartbeats reach the node API again (what it says is looked at in the last test).
      await eventually('a heartbeat through the restored link', async () => {
        const seen = (await sys.call<{ lastSeenAt: string | null }>('GET', `/v1/nodes/${nodeId}`)).body.lastSeenAt;
        return seen && Date.parse(seen) > restoredAt ? true : undefined;
      }, 90_000);

      const run = await waitForRun(sys.call, runId, 180_000);
      assert.equal(run.status, 'succeeded', JSON.stringify(run));
      assert.equal(run.outputs?.runCount, 1, 'the template ran once');
      assert.notEqual(run.stateVersion, null, 'its /state was archived');
      const log = await storedStdout(runId);
      assert.ok(log === expectedLines(lines), `the log is every line once, in order; got ${log.length} bytes, last line ${lastLine(log)}, ending ${JSON.stringify(log.slice(-40))}`);
      assert.deepEqual(await containers.stop(), [first], 'one container for the run, never a second');
      await nextRunSucceeds(pid);
      outages.at(-1)!.end = node!.lines.length;
    } finally {
      await net.restore();
      await containers.stop();
    }
  });

  it('finishes a run whose gateway was stopped in its middle and started again on the same address: one container, the log whole, the node back by itself', async () => {
    const lines = 450; // ~48 s
    const deploymentId = await createDeployment(sys.call, template, { lines }, { kind: 'node', node: nodeId });
    const runId = await startRun(deploymentId);
    const containers = watchContainers(runId);
    try {
      await waitForExecuting(sys.call, runId, 60_000);
      const first = await containers.first();
      await eventually('the first lines to be stored', async () => (lastLine(await storedStdout(runId)) >= 30 ? true : undefined), 60_000);

      const from = node!.lines.length;
      const pid = node!.child.pid;
      await gateway!.stop();
      gateway = undefined;
      await node!.saidSince(from, /heartbeat to the node API failed|cannot reach Temporal/, 30_000);
      await sleep(5_000);
      gateway = await startOwnGateway(sys, listen, path.join(dir, 'gateway'));
      assert.equal(gateway.address, listen, 'the new gateway listens where the old one did');
      const restartedAt = Date.now();
      outages.push({ what: 'the gateway restart', back: node!.lines.length });

      await eventually('a heartbeat through the new gateway', async () => {
        const seen = (await sys.call<{ lastSeenAt: string | null }>('GET', `/v1/nodes/${nodeId}`)).body.lastSeenAt;
        return seen && Date.parse(seen) > restartedAt ? true : undefined;
      }, 60_000);

      const run = await waitForRun(sys.call, runId, 120_000);
      assert.equal(run.status, 'succeeded', JSON.stringify(run));
      assert.equal(run.outputs?.runCount, 1, 'the template ran once');
      const log = await storedStdout(runId);
      assert.ok(log === expectedLines(lines), `the log is every line once, in order; got ${log.length} bytes, last line ${lastLine(log)}, ending ${JSON.stringify(log.slice(-40))}`);
      assert.deepEqual(await containers.stop(), [first], 'one container for the run, never a second');
      await nextRunSucceeds(pid);
      outages.at(-1)!.end = node!.lines.length;
    } finally {
      gateway ??= await startOwnGateway(sys, listen, path.join(dir, 'gateway'));
      await containers.stop();
    }
  });

  it('says on its stderr, after each outage, that it reached the gateway again', () => {
    assert.equal(outages.length, 2, 'both outages were lived through');
    for (const { what, back, end } of outages) {
      assert.ok(end !== undefined, `the test of ${what} did not get as far as the next run`);
      const said = node!.lines.slice(back, end);
      // The node's own lines (workers/node-main.ts), neither WARN nor ERROR, about the gateway: e.g. "polls task
      // queue … through the gateway at …" when a worker is made again.
      assert.ok(
        said.some((l) => /\[glider-gun node\] (?!WARN|ERROR)[^{]*gateway/.test(l)),
        `after ${what} the node never said it was back; its lines from then until the next run had succeeded:\n${said.filter((l) => !/^\s|^\}/.test(l)).join('\n')}`,
      );
    }
  });
});
