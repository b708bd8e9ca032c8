import { pushImageTo } from '../../infra/dev/kubernetes.js';

/**
 * Pushes a local image to the test registry (test/run.ts starts it) and answers its registry reference:
 * the form both adapters run, a Docker node pulling it and a Kubernetes node likewise.
 */
export async function pushToRegistry(localRef: string): Promise<string> {
  // Without the test cluster (GG_TEST_KUBERNETES=0) there is no registry: a Docker node runs the local image.
  const registry = process.env.GG_TEST_REGISTRY;
  return registry ? pushImageTo(registry, localRef) : localRef;
}
