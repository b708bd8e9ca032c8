/**
 * `GLIDERGUN_DEV_KUBERNETES=true npm start`: the dev stack with the test suite's single-node Kubernetes, so the
 * `cluster` target can be tried on one machine. The cluster is made afresh at every start (its data is not
 * kept); its node pulls from the stack's own registry (dev-registry.ts), whose images and port are kept, so
 * template versions built before a restart still run after it. The pod-runner and example images go there.
 */
import { rm } from 'node:fs/promises';
import type Docker from 'dockerode';
import type { Config } from '../../core/config.js';
import { ensureBaseImages, ensurePodRunnerImage } from './images.js';
import { startTestCluster, type TestCluster } from './kubernetes.js';
import { clearClusterLeftovers } from './leftovers.js';
import { freePort } from './ports.js';
import { say, step } from './progress.js';

export interface DevCluster {
  cluster: TestCluster;
  /** The configuration with Kubernetes execution turned on against this cluster. */
  config: Config;
  /** Where pods call the agent API back (on the cluster's host address). */
  agentPort: number;
  exampleImage: string;
}

/** `registry`: host:port of the stack's registry (plain HTTP), where the node pulls from and builds push to. */
export async function startDevCluster(config: Config, docker: Docker, dir: string, registry: string): Promise<DevCluster> {
  // The stack has cleared what a dead start left; a cluster started on its own must not trip over it either.
  const cleared = await clearClusterLeftovers(dir);
  if (cleared.length > 0) say(`cleared what an earlier cluster in ${dir} left: ${cleared.join(', ')}`);
  await rm(dir, { recursive: true, force: true });
  const cluster = await step('starting a single-node Kubernetes (GLIDERGUN_DEV_KUBERNETES)', () => startTestCluster({ dir, registry }));
  try {
    const images = await ensureBaseImages(docker);
    const runner = await step('building the pod-runner image', () => ensurePodRunnerImage(docker));
    const [runnerImage, exampleImage] = await step(`pushing the pod-runner and example images to ${registry}`, async () => [
      await cluster.pushImage(runner),
      await cluster.pushImage(images.example),
    ]);
    const agentPort = config.api.port === 0 ? await freePort() : config.api.port;
    return {
      cluster,
      agentPort,
      exampleImage,
      config: {
        ...config,
        kubernetes: {
          ...config.kubernetes,
          enabled: true,
          kubeconfig: cluster.workerKubeconfig,
          namespace: cluster.namespace,
          agentUrl: `http://${cluster.hostAddress}:${agentPort}`,
          runnerImage,
        },
        registries: { ...config.registries, insecure: [...config.registries.insecure, cluster.registry] },
        // Builds push where the cluster pulls from, unless the operator named a registry.
        builds: { ...config.builds, registry: config.builds.registry ?? `${cluster.registry}/glider-gun/templates` },
      },
    };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}
