import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { BatchV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { runSelector } from '../../activities/execution/kubernetes/job-spec.js';
import { env, eventually } from './env.js';

/** The test cluster as its admin sees it: for set-up and checks, never for the code under test. */
export function adminKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(env('GG_TEST_KUBECONFIG_ADMIN'));
  return kc;
}

/**
 * An image pull Secret in the runs' namespace, made as docs/operators-guide.md tells an operator to:
 * `kubectl create secret generic … --type=kubernetes.io/dockerconfigjson` from a Docker auth file.
 */
export async function createPullSecret(name: string, auths: Record<string, { username: string; password: string }>, scratchDir: string): Promise<void> {
  const authFile = path.join(scratchDir, `${name}.json`);
  await writeFile(authFile, JSON.stringify({ auths }));
  await promisify(execFile)(env('GG_TEST_KUBECTL'), [
    '--kubeconfig', env('GG_TEST_KUBECONFIG_ADMIN'), '-n', env('GG_TEST_K8S_NAMESPACE'),
    'create', 'secret', 'generic', name, '--type=kubernetes.io/dockerconfigjson', `--from-file=.dockerconfigjson=${authFile}`,
  ]);
}

/** Waits until nothing of the run is left in the cluster: no Job, no pod, no Secret. */
export async function runGoneFromCluster(runId: string, timeoutMs = 60_000): Promise<void> {
  const kc = adminKubeConfig();
  const batch = kc.makeApiClient(BatchV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  const namespace = env('GG_TEST_K8S_NAMESPACE');
  await eventually(`run ${runId}'s Job, pod and Secret to be gone`, async () => {
    const [jobs, pods, secrets] = await Promise.all([
      batch.listNamespacedJob({ namespace, labelSelector: runSelector(runId) }),
      core.listNamespacedPod({ namespace, labelSelector: runSelector(runId) }),
      core.listNamespacedSecret({ namespace, labelSelector: runSelector(runId) }),
    ]);
    return jobs.items.length + pods.items.length + secrets.items.length === 0 ? true : undefined;
  }, timeoutMs);
}
