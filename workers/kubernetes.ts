import { KubeConfig } from '@kubernetes/client-node';
import { RegistryClient } from '../activities/execution/image-config.js';
import { KubernetesExecutor } from '../activities/execution/kubernetes/executor.js';
import { loadPodTemplate } from '../activities/execution/kubernetes/pod-template.js';
import type { Config } from '../core/config.js';
import { RegistryCredentials } from '../core/registry-credentials.js';
import type { RunAgents } from '../activities/execution/outcome.js';

/** GLIDERGUN_KUBECONFIG, else the in-cluster ServiceAccount when running in a pod, else the default kubeconfig. */
export function loadKubeConfig(k: Config['kubernetes']): KubeConfig {
  const kubeConfig = new KubeConfig();
  if (k.kubeconfig) kubeConfig.loadFromFile(k.kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kubeConfig.loadFromCluster();
  else kubeConfig.loadFromDefault();
  return kubeConfig;
}

/** The main cluster's execution adapter: one Job per run, in the configured namespace. */
export async function createKubernetesExecutor(config: Config, agents: RunAgents): Promise<KubernetesExecutor> {
  const k = config.kubernetes;
  if (!k.runnerImage) throw new Error('GLIDERGUN_KUBERNETES_RUNNER_IMAGE is not set');
  return new KubernetesExecutor(
    loadKubeConfig(k),
    {
      namespace: k.namespace,
      runnerImage: k.runnerImage,
      agentUrl: k.agentUrl,
      scheduleTimeoutSeconds: k.scheduleTimeoutSeconds,
      pullTimeoutSeconds: k.pullTimeoutSeconds,
      imagePullSecrets: k.imagePullSecrets,
      ...(k.podTemplateFile ? { podTemplate: await loadPodTemplate(k.podTemplateFile) } : {}),
    },
    new RegistryClient(config.registries.insecure, new RegistryCredentials(config.registries.credentials)),
    agents,
  );
}
