/**
 * The dev stack (`npm start`) leaves no orphans and starts again, whatever killed it. Started for real as a
 * child process on a data dir and ports of its own (embedded Postgres, a Temporal dev server, the registry,
 * and — with the test cluster running beside it, unless GG_TEST_KUBERNETES=0 — its own dev Kubernetes with
 * a pod running), three times on the same data dir (the tests run in order, each on the one before):
 *   1. `kill -9` of the stack: the kernel ends its daemons, the watchdog clears the rest (Postgres, the
 *      pods, mounts, bridge, cgroups) within a bound;
 *   2. `kill -9` of the stack and its watchdog at once: the next start clears what is left and comes up;
 *   3. on that start, a run of a template version whose image was pushed to the dev registry in the first
 *      life succeeds (the registry's port and images are kept), and Ctrl-C (SIGINT) stops it all.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import { clearStackLeftovers, clusterNames } from '../../infra/dev/leftovers.js';
import { processesInCgroupRoot } from '../../infra/dev/cgroups.js';
import { pushImageTo } from '../../infra/dev/registry.js';
import { run } from '../../infra/dev/commands.js';
import { EXAMPLE_PARAMETERS, uniqueName, type RunBody } from '../support/fixtures.js';
import {
  describeProcs,
  keepablePort,
  leftovers,
  printed,
  spawnStack,
  stackProcesses,
  stillAlive,
  waitUntilServing,
  watchdogOf,
  type StackProcess,
} from '../support/dev-stack.js';
import { env, eventually, images, noCluster, SECRETS_ROOT } from '../support/system.js';

/** A pod that runs until killed, in the runs' namespace (its ServiceAccount exists once the stack serves). */
async function runSleeper(kubectl: string, kubeconfig: string, image: string): Promise<void> {
  await run(kubectl, ['--kubeconfig', kubeconfig, '-n', 'glider-gun-runs', 'run', 'sleeper', '--image', image, '--restart=Never', '--command', '--', 'sleep', '3600']);
}

function exampleImageOf(s: StackProcess): string {
  const image = /runs Jobs in namespace \S+; image (\S+)/.exec(s.output())?.[1];
  assert.ok(image, 'the stack prints its example image');
  return image;
}

/** From the kill to nothing left: the kernel is immediate, the watchdog's clearing takes a few seconds. */
const GONE_WITHIN_MS = 20_000;
const devKubernetes = !noCluster;

describe(`the dev stack${devKubernetes ? ' with its dev Kubernetes' : ''} after a kill -9`, { timeout: 15 * 60_000 }, () => {
  let dataDir: string;
  let stackEnv: Record<string, string>;
  let ports: Record<string, number>;
  let apiUrl: string;
  let stack: StackProcess | undefined;
  let registry: string | undefined;
  let keptImage: string | undefined;
  const startTimeout = (devKubernetes ? 300 : 120) * 1000;

  async function start(): Promise<StackProcess> {
    const started = Date.now();
    stack = spawnStack(stackEnv);
    await waitUntilServing(stack, apiUrl, startTimeout);
    console.log(`# the stack served after ${((Date.now() - started) / 1000).toFixed(1)}s`);
    return stack;
  }

  /** SIGKILL to `pids`; then waits until nothing of the stack is left and answers how long that took. */
  async function killAndWaitForNothingLeft(pids: number[], procs: Awaited<ReturnType<typeof stackProcesses>>): Promise<number> {
    const killed = Date.now();
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    const left = await eventually('nothing of the stack to be left', async () => ((await leftovers(procs, dataDir, ports)).length === 0 ? true : undefined), GONE_WITHIN_MS).catch(
      async (err: unknown) => {
        throw new Error(`${err instanceof Error ? err.message : String(err)}: left ${(await leftovers(procs, dataDir, ports)).join('; ')}`);
      },
    );
    assert.ok(left);
    return Date.now() - killed;
  }

  before(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'gg-dev-stack-'));
    // The embedded Postgres runs as its own user when we are root: it must reach its folder.
    await chmod(dataDir, 0o755);
    const [api, temporal, ui, postgres, gateway] = [await keepablePort(), await keepablePort(), await keepablePort(), await keepablePort(), await keepablePort()];
    ports = { api, temporal, 'Temporal UI': ui, postgres, gateway };
    apiUrl = `http://127.0.0.1:${api}`;
    stackEnv = {
      GLIDERGUN_DATA_DIR: dataDir,
      GLIDERGUN_API_PORT: String(api),
      GLIDERGUN_TEMPORAL_PORT: String(temporal),
      TEMPORAL_UI_PORT: String(ui),
      GLIDERGUN_EMBEDDED_PG_PORT: String(postgres),
      GLIDERGUN_GATEWAY_PORT: String(gateway),
      // Short: the runner's socket lives under it (a unix socket path is at most 107 bytes).
      GLIDERGUN_SECRETS_DIR: path.join(SECRETS_ROOT, `ds-${path.basename(dataDir).slice(-6)}`),
      TEMPORAL_CLI_PATH: env('GG_TEST_TEMPORAL_CLI'),
      GLIDERGUN_LOG_LEVEL: 'warn',
      ...(devKubernetes ? { GLIDERGUN_DEV_KUBERNETES: 'true' } : {}),
      ...(process.env.DOCKER_HOST ? { DOCKER_HOST: process.env.DOCKER_HOST } : {}),
    };
  });

  after(async () => {
    if (stack && stack.child.exitCode === null && stack.child.signalCode === null) {
      stack.child.kill('SIGINT');
      await stack.exited;
    }
    // Whatever a failed test left must not outlive it.
    await clearStackLeftovers(dataDir);
    await rm(dataDir, { recursive: true, force: true });
  });

  const long = { timeout: 10 * 60_000 };

  it('1. kill -9 of the stack: its children die with it and the watchdog clears the rest', long, async () => {
    const s = await start();
    registry = printed(s, 'registry');
    assert.ok(registry, 'the stack prints its registry');
    ports.registry = Number(registry.split(':')[1]);
    // An image only this life pushes: after the restarts, a run of it shows the registry kept its images.
    const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
    const repo = `glider-gun/dev-stack-kept-${path.basename(dataDir).toLowerCase()}`;
    const local = `${repo}:1`;
    await docker.getImage(images.example).tag({ repo, tag: '1' });
    keptImage = await pushImageTo(registry, local);
    await docker.getImage(local).remove();

    if (devKubernetes) {
      const kubectl = path.join(path.dirname(env('GG_TEST_KUBECTL')), 'kubectl');
      const kubeconfig = path.join(dataDir, 'kubernetes', 'admin.kubeconfig');
      const image = exampleImageOf(s);
      await runSleeper(kubectl, kubeconfig, image);
      await eventually('the pod to run', async () => ((await processesInCgroupRoot(clusterNames(path.join(dataDir, 'kubernetes')).cgroupRoot)).length > 1 ? true : undefined), 60_000);
    }
    const procs = await stackProcesses(s.child.pid!, dataDir);
    const names = new Set(procs.map((p) => path.basename(p.argv[0] ?? '')));
    for (const expected of ['temporal', 'postgres', 'docker-registry', ...(devKubernetes ? ['etcd', 'kube-apiserver', 'kubelet', 'containerd', 'containerd-shim-runc-v2'] : [])]) {
      assert.ok(names.has(expected), `${expected} runs (${[...names].join(', ')})`);
    }
    const watchdog = await watchdogOf(dataDir);
    assert.ok(watchdog, 'a watchdog runs');

    const ms = await killAndWaitForNothingLeft([s.child.pid!], procs);
    console.log(`# after kill -9 of the stack, nothing of it was left after ${ms} ms (${procs.length} processes)`);
    await eventually('the watchdog to end', async () => ((await watchdogOf(dataDir)) ? undefined : true), 10_000);
    assert.match(await readFile(path.join(dataDir, 'run', 'watchdog.log'), 'utf8'), /died; cleared/);
  });

  it('2. kill -9 of the stack and its watchdog: the next start clears what is left and comes up', long, async () => {
    const s = await start();
    assert.equal(printed(s, 'registry'), registry, 'the registry keeps its port');
    if (devKubernetes) {
      const kubectl = path.join(path.dirname(env('GG_TEST_KUBECTL')), 'kubectl');
      const kubeconfig = path.join(dataDir, 'kubernetes', 'admin.kubeconfig');
      const image = exampleImageOf(s);
      await runSleeper(kubectl, kubeconfig, image);
      await eventually('the pod to run', async () => ((await processesInCgroupRoot(clusterNames(path.join(dataDir, 'kubernetes')).cgroupRoot)).length > 1 ? true : undefined), 60_000);
    }
    const procs = await stackProcesses(s.child.pid!, dataDir);
    const watchdog = await watchdogOf(dataDir);
    assert.ok(watchdog);
    process.kill(watchdog.pid, 'SIGKILL');
    process.kill(s.child.pid!, 'SIGKILL');
    await s.exited;
    // Only the kernel acts now: the stack's direct children (Temporal, the registry, the cluster's daemons) die.
    await eventually('the direct children to die', async () => {
      const direct = (await stillAlive(procs)).filter((p) => p.ppid === s.child.pid && !/postgres/.test(p.argv[0] ?? ''));
      return direct.length === 0 ? true : undefined;
    }, 10_000).catch(async (err: unknown) => {
      throw new Error(`${err instanceof Error ? err.message : String(err)}: ${describeProcs(await stillAlive(procs))}`);
    });
    console.log(`# with the watchdog killed too, left for the next start: ${(await leftovers(procs, dataDir, ports)).join('; ') || 'nothing'}`);

    const next = await start();
    assert.match(next.output(), /an earlier start had died: cleared \S/);
    assert.equal(printed(next, 'registry'), registry, 'the registry keeps its port');
  });

  it('3. on the restarted stack, a version pushed to the dev registry in the first life still runs; Ctrl-C stops everything', long, async () => {
    const s = stack;
    assert.ok(s && s.child.exitCode === null, 'the stack of test 2 runs');
    const token = (await readFile(path.join(dataDir, 'admin-token'), 'utf8')).trim();
    const call = async <T>(method: string, p: string, body?: unknown) => {
      const res = await fetch(`${apiUrl}${p}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, body: (await res.json()) as T };
    };
    const name = uniqueName('kept');
    assert.equal((await call('POST', '/v1/templates', { name })).status, 201);
    const version = await call('POST', `/v1/templates/${name}/versions`, { image: keptImage, tfVars: true, parameters: EXAMPLE_PARAMETERS });
    assert.equal(version.status, 201, JSON.stringify(version.body));
    const target = devKubernetes ? { kind: 'cluster' } : { kind: 'node', node: 'local' };
    const d = await call<{ id: string }>('POST', '/v1/deployments', { template: { name }, parameters: { message: 'kept' }, target });
    assert.equal(d.status, 201, JSON.stringify(d.body));
    const r = await call<{ id: string }>('POST', `/v1/deployments/${d.body.id}/runs`, { action: 'deploy' });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const ended = await eventually('the run to end', async () => {
      const got = await call<RunBody>('GET', `/v1/runs/${r.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(got.body.status) ? got.body : undefined;
    }, 120_000);
    assert.equal(ended.status, 'succeeded', `${ended.reason ?? ''}: ${ended.message ?? ''}`);

    const procs = await stackProcesses(s.child.pid!, dataDir);
    s.child.kill('SIGINT');
    assert.equal(await s.exited, 0, s.output().slice(-3000));
    // The watchdog looks once more after the stack has gone, then ends too.
    await eventually('nothing of the stack to be left after Ctrl-C', async () => ((await leftovers(procs, dataDir, ports)).length === 0 ? true : undefined), 10_000).catch(
      async (err: unknown) => {
        throw new Error(`${err instanceof Error ? err.message : String(err)}: left ${(await leftovers(procs, dataDir, ports)).join('; ')}`);
      },
    );
  });
});
