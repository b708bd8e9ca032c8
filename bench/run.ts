/**
 * `npm run bench`: measures Glider Gun against baselines taken in the same run on the same machine, and
 * ends with one `name: value` line per figure.
 *   run-overhead-ratio   median no-op `deploy` through the API (request → succeeded, state archived)
 *                        over the median bare `docker run --rm` of the same image
 *   archive-ratio        our archive + restore of a 200 MB /state (the runner's tar + gzip, encrypted chunks in Postgres)
 *                        over `tar c | gzip` + `gunzip | tar x` of the same folder at the same level
 *   archive-peak-rss-mb  this process's peak resident memory while doing it (and at 50 MB, to show it is flat)
 *   remote-run-overhead-ratio  the same no-op `deploy` on a remote node (a node process of its own, enrolled
 *                        through the gateway, every call through it) over the same bare `docker run --rm`
 *   k8s-run-overhead-ratio  median no-op `deploy` on the `cluster` target (a Job with the pod-runner, state
 *                        restored and archived through the agent API) over the median bare Job of the same
 *                        image and command (create → pod Succeeded), on the test cluster
 * BENCH_RUNS (default 20) sets the number of runs of each kind (BENCH_K8S_RUNS, default 10, on Kubernetes);
 * BENCH_KUBERNETES=0 leaves the Kubernetes figures out.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { installRunner } from '../activities/execution/docker-images.js';
import { RegistryCredentials } from '../core/registry-credentials.js';
import { SecretBox } from '../core/crypto.js';
import { createPool } from '../core/db/pool.js';
import { readStateVersion, writeStateVersion } from '../core/db/state.js';
import { newId } from '../core/ids.js';
import { say } from '../infra/dev/progress.js';
import { startTestServices } from '../infra/dev/test-services.js';
// Types only: the modules themselves are imported once the services' variables are set.
import type * as Fixtures from '../test/support/fixtures.js';
import type { TestSystem } from '../test/support/system.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 20);
const results: [string, string][] = [];
const result = (name: string, value: number | string) => {
  results.push([name, typeof value === 'number' ? value.toFixed(value < 10 ? 3 : 1) : value]);
};
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const withKubernetes = process.env.BENCH_KUBERNETES !== '0';
  const services = await startTestServices('bench', { kubernetes: withKubernetes });
  Object.assign(process.env, services.env);
  const { startTestSystem, kubernetesEnv } = await import('../test/support/system.js');
  const { registerExampleTemplate, createDeployment } = await import('../test/support/fixtures.js');
  const sys = await startTestSystem(withKubernetes ? { env: await kubernetesEnv() } : {});
  try {
    const image = services.env.GG_TEST_IMAGE_EXAMPLE!;

    // Baseline: the same image, the same contract inputs, no platform.
    say(`bare docker run --rm × ${RUNS} (+2 warm-up)`);
    const bare: number[] = [];
    const stateDir = path.join(services.scratch, 'bare-state');
    await mkdir(stateDir, { recursive: true });
    await writeFile(path.join(stateDir, 'template-parameters.json'), '{"message":"bench"}');
    for (let i = 0; i < RUNS + 2; i++) {
      const t0 = performance.now();
      const env = ['TF_VAR_message=bench', 'GLIDERGUN_CONTRACT_VERSION=1', 'GLIDERGUN_ACTION=deploy', 'GLIDERGUN_DEPLOYMENT_ID=dep-bench', 'GLIDERGUN_RUN_ID=run-bench'];
      const r = spawnSync('docker', ['run', '--rm', '--init', ...env.flatMap((e) => ['-e', e]), '-v', `${stateDir}:/state`, image, 'deploy'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`docker run failed: ${r.stderr}`);
      if (i >= 2) bare.push(performance.now() - t0);
    }

    say(`no-op deploy runs through the API × ${RUNS} (+2 warm-up)`);
    const template = await registerExampleTemplate(sys.call);
    const dep = await createDeployment(sys.call, template, { message: 'bench' }, { kind: 'node', node: sys.nodeId });
    const local = await timeRuns(sys, dep);
    say(`  per phase (medians): accepted → started ${median(local.toStart).toFixed(0)} ms, started → recorded (restore, container, archive) ${median(local.execute).toFixed(0)} ms`);
    result('docker-run-median-ms', median(bare));
    result('run-median-ms', median(local.total));
    result('run-phase-accept-to-start-median-ms', median(local.toStart));
    result('run-phase-start-to-finish-median-ms', median(local.execute));
    result('run-overhead-ratio', median(local.total) / median(bare));

    await benchRemoteNode(sys, template, median(bare), createDeployment);

    // The runner packs and unpacks /state in every run; here it is run on its own (`pack`, `unpack`).
    const runner = await installRunner(services.docker, services.env.GG_TEST_NODE_RUNNER_IMAGE!, path.join(services.scratch, 'bin'), new RegistryCredentials(), () => undefined);
    const GZIP_LEVEL = 6; // the runner's
    const box = new SecretBox(randomBytes(32));
    const db = createPool(services.env.GG_TEST_DATABASE_URL!, 4);
    for (const mb of [50, 200]) {
      const src = path.join(services.scratch, `state-${mb}`);
      await mkdir(src, { recursive: true });
      // Text-like data (base64 of random bytes): compresses to about 75%, as real state files roughly do.
      for (let i = 0; i < mb / 4; i++) await writeFile(path.join(src, `file-${i}.txt`), randomBytes(3 * 1024 * 1024).toString('base64'));
      say(`archive + restore of ${mb} MB: baseline tar | gzip -${GZIP_LEVEL}, then ours`);
      const out = path.join(services.scratch, `baseline-${mb}.tar.gz`);
      const baseDst = path.join(services.scratch, `baseline-${mb}`);
      await mkdir(baseDst);
      let t0 = performance.now();
      execFileSync('sh', ['-c', `tar c -C '${src}' . | gzip -${GZIP_LEVEL} > '${out}' && gunzip -c '${out}' | tar x -C '${baseDst}'`]);
      const baseline = performance.now() - t0;

      const dst = path.join(services.scratch, `ours-${mb}`);
      await mkdir(dst);
      const deploymentId = (await db.query<{ id: string }>('SELECT id FROM deployments WHERE id = $1', [dep])).rows[0]!.id;
      const runId = newId('run');
      await db.query(`INSERT INTO runs (id, deployment_id, action, requested_by, status, started_at, finished_at) VALUES ($1, $2, 'bench', 'bench', 'succeeded', now(), now())`, [runId, deploymentId]);
      global.gc?.();
      const rssBefore = process.memoryUsage().rss;
      let peak = rssBefore;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
      t0 = performance.now();
      const packer = spawn(runner, ['pack', src], { stdio: ['ignore', 'pipe', 'inherit'] });
      const version = await writeStateVersion(db, box, { deploymentId, runId }, packer.stdout);
      const unpacker = spawn(runner, ['unpack', dst], { stdio: ['pipe', 'inherit', 'inherit'] });
      const unpacked = new Promise<void>((resolve, reject) => unpacker.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`runner unpack exited with ${code}`)))));
      await pipeline(readStateVersion(db, box, deploymentId, version.version), unpacker.stdin);
      await unpacked;
      const ours = performance.now() - t0;
      clearInterval(sampler);
      say(`  ${mb} MB: ours ${ours.toFixed(0)} ms, baseline ${baseline.toFixed(0)} ms, archive ${(version.sizeBytes / 1e6).toFixed(1)} MB, peak RSS ${(peak / 1e6).toFixed(0)} MB (before ${(rssBefore / 1e6).toFixed(0)} MB)`);
      if (mb === 200) {
        result('archive-ours-ms', ours);
        result('archive-baseline-ms', baseline);
        result('archive-ratio', ours / baseline);
        result('archive-peak-rss-mb', peak / 1e6);
      } else {
        result('archive-peak-rss-mb-at-50mb', peak / 1e6);
      }
      await rm(src, { recursive: true, force: true });
      await rm(dst, { recursive: true, force: true });
      await rm(baseDst, { recursive: true, force: true });
    }
    await db.end();

    if (withKubernetes) await benchKubernetes(sys, services, registerExampleTemplate, createDeployment);
  } finally {
    await sys.stop();
    await services.stop();
  }
  console.log('');
  for (const [name, value] of results) console.log(`${name}: ${value}`);
}

/** `RUNS` no-op deploys of a deployment (after 2 warm-ups), each timed from the POST to the run `succeeded` with its state archived. */
async function timeRuns(sys: TestSystem, dep: string): Promise<{ total: number[]; toStart: number[]; execute: number[] }> {
  const total: number[] = [];
  const toStart: number[] = [];
  const execute: number[] = [];
  for (let i = 0; i < RUNS + 2; i++) {
    const t0 = performance.now();
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${dep}/runs`, { action: 'deploy' });
    if (started.status !== 202) throw new Error(`run refused: ${JSON.stringify(started.body)}`);
    let run: { status: string; stateVersion: number | null; createdAt: string; startedAt: string; finishedAt: string };
    for (;;) {
      run = (await sys.call<typeof run>('GET', `/v1/runs/${started.body.id}`)).body;
      if (run.status === 'succeeded' && run.stateVersion !== null) break;
      if (['failed', 'cancelled'].includes(run.status)) throw new Error(`bench run ended ${run.status}`);
      await sleep(5);
    }
    if (i < 2) continue;
    total.push(performance.now() - t0);
    toStart.push(Date.parse(run.startedAt) - Date.parse(run.createdAt));
    execute.push(Date.parse(run.finishedAt) - Date.parse(run.startedAt));
    // The container is removed after the run is recorded; let that finish so runs don't overlap.
    await sleep(50);
  }
  return { total, toStart, execute };
}

/**
 * The same no-op deploy on a remote node: a node process of its own (`npm run node-worker`), enrolled
 * through the test system's gateway with a token from `POST /v1/nodes`, reaching Temporal and the API only
 * through that gateway (mTLS, its checks on every call), on the same Docker engine as the bare baseline.
 */
async function benchRemoteNode(sys: TestSystem, template: string, bareMedian: number, createDeployment: typeof Fixtures.createDeployment): Promise<void> {
  const { createAndEnrolNode, nodeWorker, remoteNodeEnv } = await import('../test/support/remote-node.js');
  const { SECRETS_ROOT } = await import('../test/support/system.js');
  const suffix = randomBytes(3).toString('hex');
  const dir = path.join(process.env.GG_TEST_SCRATCH!, `bench-remote-${suffix}`);
  const secretsDir = `${SECRETS_ROOT}/bench-remote-${suffix}`;
  const environment = remoteNodeEnv(secretsDir, { GLIDERGUN_LOG_LEVEL: 'warn' });
  say(`a remote node (its own process, through the gateway at ${sys.gatewayAddress}): no-op deploy runs × ${RUNS} (+2 warm-up)`);
  const nodeId = await createAndEnrolNode(sys, { name: `bench-${suffix}`, gateway: sys.gatewayAddress, dir, environment });
  const node = nodeWorker(['--dir', path.join(dir, 'id')], environment);
  try {
    // Polling once its first heartbeat is in (it reports its version then).
    for (let waited = 0; ; waited += 100) {
      const seen = (await sys.call<{ version: string | null }>('GET', `/v1/nodes/${nodeId}`)).body;
      if (seen.version) break;
      if (node.child.exitCode !== null || waited > 60_000) throw new Error(`the remote node did not come up:\n${node.lines.join('\n')}`);
      await sleep(100);
    }
    const dep = await createDeployment(sys.call, template, { message: 'bench' }, { kind: 'node', node: nodeId });
    const remote = await timeRuns(sys, dep);
    say(`  per phase (medians): accepted → started ${median(remote.toStart).toFixed(0)} ms, started → recorded ${median(remote.execute).toFixed(0)} ms`);
    result('remote-run-median-ms', median(remote.total));
    result('remote-run-phase-start-to-finish-median-ms', median(remote.execute));
    result('remote-run-overhead-ratio', median(remote.total) / bareMedian);
  } finally {
    await node.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(secretsDir, { recursive: true, force: true });
  }
}

/** The cluster target against a bare Job of the same image and command, on the test cluster. */
async function benchKubernetes(
  sys: TestSystem,
  services: Awaited<ReturnType<typeof startTestServices>>,
  registerExampleTemplate: typeof Fixtures.registerExampleTemplate,
  createDeployment: typeof Fixtures.createDeployment,
): Promise<void> {
  const runs = Number(process.env.BENCH_K8S_RUNS ?? 10);
  const { BatchV1Api, CoreV1Api, KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  kc.loadFromFile(services.env.GG_TEST_KUBECONFIG_ADMIN!);
  const batch = kc.makeApiClient(BatchV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  const namespace = services.env.GG_TEST_K8S_NAMESPACE!;
  const image = services.env.GG_TEST_K8S_IMAGE_EXAMPLE!;

  say(`bare Job of the example image × ${runs} (+1 warm-up)`);
  const bare: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    const name = `bench-bare-${i}-${randomBytes(3).toString('hex')}`;
    const t0 = performance.now();
    await batch.createNamespacedJob({
      namespace,
      body: {
        metadata: { name },
        spec: {
          backoffLimit: 0,
          template: {
            spec: {
              restartPolicy: 'Never',
              automountServiceAccountToken: false,
              containers: [
                {
                  name: 'template',
                  image,
                  args: ['deploy'],
                  env: [
                    { name: 'TF_VAR_message', value: 'bench' },
                    { name: 'GLIDERGUN_CONTRACT_VERSION', value: '1' },
                    { name: 'GLIDERGUN_ACTION', value: 'deploy' },
                    { name: 'GLIDERGUN_DEPLOYMENT_ID', value: 'dep-bench' },
                    { name: 'GLIDERGUN_RUN_ID', value: 'run-bench' },
                  ],
                  volumeMounts: [{ name: 'state', mountPath: '/state' }, { name: 'logs', mountPath: '/logs' }],
                },
              ],
              volumes: [{ name: 'state', emptyDir: {} }, { name: 'logs', emptyDir: {} }],
            },
          },
        },
      },
    });
    // Ended when its container is seen terminated, the signal the adapter acts on: the pod's phase only turns
    // Succeeded after the kubelet has torn the pod down, which would flatter us by about a second.
    for (;;) {
      const pods = await core.listNamespacedPod({ namespace, labelSelector: `job-name=${name}` });
      const terminated = pods.items[0]?.status?.containerStatuses?.[0]?.state?.terminated;
      if (terminated?.exitCode === 0) break;
      if (terminated || pods.items[0]?.status?.phase === 'Failed') throw new Error(`bare Job ${name} failed`);
      await sleep(20);
    }
    if (i >= 1) bare.push(performance.now() - t0);
    await batch.deleteNamespacedJob({ name, namespace, propagationPolicy: 'Background' });
  }

  say(`no-op deploy runs on the cluster target × ${runs} (+1 warm-up)`);
  const template = await registerExampleTemplate(sys.call, { image });
  const dep = await createDeployment(sys.call, template, { message: 'bench' }, { kind: 'cluster' });
  const ours: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    const t0 = performance.now();
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${dep}/runs`, { action: 'deploy' });
    if (started.status !== 202) throw new Error(`run refused: ${JSON.stringify(started.body)}`);
    for (;;) {
      const run = (await sys.call<{ status: string; stateVersion: number | null }>('GET', `/v1/runs/${started.body.id}`)).body;
      if (run.status === 'succeeded' && run.stateVersion !== null) break;
      if (['failed', 'cancelled'].includes(run.status)) throw new Error(`bench run ended ${run.status}`);
      await sleep(20);
    }
    if (i >= 1) ours.push(performance.now() - t0);
    await sleep(200); // the Job is removed after the run is recorded
  }
  result('k8s-bare-job-median-ms', median(bare));
  result('k8s-run-median-ms', median(ours));
  result('k8s-run-overhead-ratio', median(ours) / median(bare));
}

await main();
