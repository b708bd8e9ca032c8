/**
 * The services the tests and the benchmarks run against, started afresh with ephemeral ports: a Temporal
 * dev server in memory, a new database (on DATABASE_URL's server, else an embedded Postgres), the Docker
 * engine's base images, the workflow bundle and, when asked, a single-node Kubernetes cluster with the base
 * images in its registry. Exposed to the code under test as GG_TEST_* variables.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type Docker from 'dockerode';
import { migrate } from '../../core/db/migrate.js';
import { WORKFLOWS_PATH } from '../../workers/cluster.js';
import { createDockerClient } from '../../workers/node.js';
import { ensureBaseImages, ensurePodRunnerImage } from './images.js';
import { startTestCluster, type TestCluster } from './kubernetes.js';
import { freePort } from './ports.js';
import { adminUrlOf, dropDatabase, ensureDatabase, startEmbeddedPostgres, withDatabase } from './postgres.js';
import { say, step } from './progress.js';
import { ensureTemporalCli, startTemporalServer } from './temporal.js';

export interface TestServices {
  docker: Docker;
  scratch: string;
  /** GG_TEST_* variables describing these services. */
  env: Record<string, string>;
  /** The Kubernetes test cluster, when asked for. */
  kubernetes: TestCluster | undefined;
  stop(): Promise<void>;
}

/**
 * The variables a test file finds when the Kubernetes cluster runs (all unset otherwise):
 *   GG_TEST_KUBECONFIG_WORKER  kubeconfig of the ServiceAccount glider-gun-worker (infra/k8s/rbac.yaml's Role only)
 *   GG_TEST_KUBECONFIG_ADMIN   kubeconfig of a cluster admin (for test set-up and checks, not for the code under test)
 *   GG_TEST_K8S_NAMESPACE      the namespace runs go to
 *   GG_TEST_REGISTRY           host:port of the registry the node pulls from (`docker push` to it works)
 *   GG_TEST_K8S_REGISTRY_HOSTS the node's containerd hosts folder: another registry to pull from gets <host:port>/hosts.toml
 *   GG_TEST_HOST_ADDRESS       an address of this host pods can reach: listen there for pods to call back
 *   GG_TEST_K8S_IMAGE_BUSYBOX, GG_TEST_K8S_IMAGE_EXAMPLE   the base images, already in that registry
 *   GG_TEST_RUNNER_IMAGE       the pod-runner image (infra/images/pod-runner), in that registry
 *   GG_TEST_KUBECTL            kubectl of the cluster's version
 */
function kubernetesEnv(cluster: TestCluster, images: { busybox: string; example: string; runner: string }): Record<string, string> {
  return {
    GG_TEST_KUBECONFIG_WORKER: cluster.workerKubeconfig,
    GG_TEST_KUBECONFIG_ADMIN: cluster.adminKubeconfig,
    GG_TEST_K8S_NAMESPACE: cluster.namespace,
    GG_TEST_REGISTRY: cluster.registry,
    GG_TEST_K8S_REGISTRY_HOSTS: cluster.registryHostsDir,
    GG_TEST_HOST_ADDRESS: cluster.hostAddress,
    GG_TEST_K8S_IMAGE_BUSYBOX: images.busybox,
    GG_TEST_K8S_IMAGE_EXAMPLE: images.example,
    GG_TEST_RUNNER_IMAGE: images.runner,
    GG_TEST_KUBECTL: path.join(cluster.binDir, 'kubectl'),
  };
}

export async function startTestServices(purpose: string, opts: { kubernetes?: boolean } = {}): Promise<TestServices> {
  const scratch = await mkdtemp(path.join(os.tmpdir(), `glider-gun-${purpose}-`));
  // The embedded Postgres runs as its own user when we are root; it must be able to reach its folder.
  await chmod(scratch, 0o755);
  const cleanups: (() => Promise<unknown>)[] = [() => rm(scratch, { recursive: true, force: true })];
  // Once, however often called (a signal handler and the normal path may both stop the services).
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      for (const c of [...cleanups].reverse()) await c().catch((err: unknown) => say(`cleanup: ${String(err)}`));
    })());
  try {
    const docker = createDockerClient(process.env.DOCKER_HOST);
    await step('checking the Docker engine', async () => {
      await docker.ping().catch((err: unknown) => {
        throw new Error(`a Docker engine is needed (${String(err)}); infra/dev/provision-host.sh installs and starts one`);
      });
    });
    const images = await step('making the base images', () => ensureBaseImages(docker));
    // Every run, on both targets, goes through the runner.
    const runnerImage = await step('building the runner image', () => ensurePodRunnerImage(docker));

    // The cluster comes up (a minute at most once built) while the other services do.
    let cluster: Promise<TestCluster> | undefined;
    if (opts.kubernetes) {
      cluster = startTestCluster({ dir: path.join(scratch, 'k8s') });
      const starting = cluster;
      cleanups.push(async () => (await starting.catch(() => undefined))?.stop());
      starting.catch(() => undefined); // awaited below; a failure must not be unhandled meanwhile
    }

    const binary = await ensureTemporalCli();
    const temporal = await step('starting a Temporal dev server (in memory)', async () => startTemporalServer({ binary, port: await freePort() }));
    cleanups.push(() => temporal.stop());

    let databaseUrl: string;
    const database = `gg_${purpose}_${process.pid}_${Date.now().toString(36)}`;
    if (process.env.DATABASE_URL) {
      const admin = adminUrlOf(process.env.DATABASE_URL);
      await ensureDatabase(admin, database);
      cleanups.push(() => dropDatabase(admin, database));
      databaseUrl = withDatabase(process.env.DATABASE_URL, database);
      say(`using Postgres from DATABASE_URL, database ${database}`);
    } else {
      const pg = await step('starting an embedded Postgres', async () =>
        startEmbeddedPostgres({ dataDir: path.join(scratch, 'postgres'), port: await freePort(), database }),
      );
      cleanups.push(() => pg.stop());
      databaseUrl = pg.url;
    }
    await step('applying migrations', () => migrate(databaseUrl));

    const bundlePath = path.join(scratch, 'workflow-bundle.js');
    await step('bundling the workflows (once for the whole run)', async () => {
      const quiet = () => undefined;
      const { code } = await bundleWorkflowCode({
        workflowsPath: WORKFLOWS_PATH,
        logger: { log: quiet, trace: quiet, debug: quiet, info: quiet, warn: (m) => say(m), error: (m) => say(m) },
      });
      await writeFile(bundlePath, code);
    });

    let kubernetes: TestCluster | undefined;
    let k8sEnv: Record<string, string> = {};
    if (cluster) {
      kubernetes = await cluster;
      const started = kubernetes;
      const pushed = await step('pushing the base images and the pod-runner to the cluster\'s registry', async () => ({
        busybox: await started.pushImage(images.busybox),
        example: await started.pushImage(images.example),
        runner: await started.pushImage(runnerImage),
      }));
      k8sEnv = kubernetesEnv(kubernetes, pushed);
    }

    return {
      docker,
      scratch,
      kubernetes,
      env: {
        ...k8sEnv,
        GG_TEST_DATABASE_URL: databaseUrl,
        GG_TEST_TEMPORAL_ADDRESS: temporal.address,
        GG_TEST_TEMPORAL_CLI: binary,
        GG_TEST_WORKFLOW_BUNDLE: bundlePath,
        GG_TEST_IMAGE_BUSYBOX: images.busybox,
        GG_TEST_IMAGE_EXAMPLE: images.example,
        GG_TEST_IMAGE_SHELL_TYPE: images.shellType,
        GG_TEST_NODE_RUNNER_IMAGE: runnerImage,
        GG_TEST_SCRATCH: scratch,
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
