import type { V1Job, V1Secret } from '@kubernetes/client-node';
import type { RunSpec } from '../../../core/domain.js';
import { ARCHIVE_GRACE_SECONDS, PARAMETERS_FILE, RUNNER_DIR, RUNNER_PATH, SECRETS_FILE, runnerEnv } from '../runner-contract.js';
import type { PodTemplate } from './pod-template.js';

/** Labels on every Job, pod and Secret of a run, so leftovers can be found and a retry finds its Job. */
export const K8S_MANAGED_LABEL = 'glider-gun.io/managed';
export const K8S_RUN_LABEL = 'glider-gun.io/run';
export const K8S_DEPLOYMENT_LABEL = 'glider-gun.io/deployment';
export const TEMPLATE_CONTAINER = 'template';

/**
 * A finished Job the adapter never removed (its worker died between recording the outcome and cleaning up,
 * or the workflow was terminated) is removed by Kubernetes after this. Safe at any age: the runner reports
 * before its pod ends, and an attempt that finds the Job gone reads that report.
 */
export const FINISHED_JOB_TTL_SECONDS = 24 * 3600;
const AGENT_DIR = '/var/run/glider-gun';

export const jobName = (runId: string): string => `gg-${runId}`;
export const runSelector = (runId: string): string => `${K8S_RUN_LABEL}=${runId}`;

export interface JobSettings {
  namespace: string;
  /** The pod-runner image (infra/images/pod-runner), copied into the pod by an init container. */
  runnerImage: string;
  /** Where the pod-runner reaches the agent API. */
  agentUrl: string;
  /** How long a pod may wait for a node, and for its images, before the run fails (also in the Job's backstop deadline). */
  scheduleTimeoutSeconds: number;
  pullTimeoutSeconds: number;
  /** dockerconfigjson Secrets in the namespace the kubelet pulls the template's and the runner's images with. */
  imagePullSecrets?: readonly string[];
  /** The operator's additions to every run's pod (pod-template.ts). */
  podTemplate?: PodTemplate;
}

function labels(spec: RunSpec): Record<string, string> {
  return { [K8S_MANAGED_LABEL]: 'true', [K8S_RUN_LABEL]: spec.runId, [K8S_DEPLOYMENT_LABEL]: spec.deploymentId };
}

/**
 * The per-run Secret: the agent credential and the two files the template reads. The Job only names it, so
 * neither the credential nor a sensitive value appears in the Job object; kubelet keeps Secret volumes in memory.
 */
export function runSecret(spec: RunSpec, s: JobSettings, credential: string, secrets: Record<string, unknown>): V1Secret {
  return {
    metadata: { name: jobName(spec.runId), namespace: s.namespace, labels: labels(spec) },
    type: 'Opaque',
    stringData: {
      credential,
      [PARAMETERS_FILE]: `${JSON.stringify(spec.parameters, null, 2)}\n`,
      [SECRETS_FILE]: `${JSON.stringify(secrets, null, 2)}\n`,
    },
  };
}

/**
 * One Job per run: never retried by Kubernetes (backoffLimit 0, and no replacement pod before the first is
 * gone), the template's entrypoint wrapped by the pod-runner, which restores /state, streams the log, and
 * archives /state in every outcome. activeDeadlineSeconds is only a backstop behind the adapter's own timeout.
 */
export function runJob(spec: RunSpec, s: JobSettings, image: { ref: string; entrypoint: string[] }): V1Job {
  const name = jobName(spec.runId);
  const env = [
    ...Object.entries(spec.env).map(([n, value]) => ({ name: n, value })),
    ...Object.entries(runnerEnv(spec, s.agentUrl)).map(([n, value]) => ({ name: n, value })),
  ];
  const limits: Record<string, string> = {};
  if (spec.cpus) limits.cpu = `${Math.round(spec.cpus * 1000)}m`;
  if (spec.memoryMb) limits.memory = `${spec.memoryMb}Mi`;
  return {
    metadata: { name, namespace: s.namespace, labels: labels(spec) },
    spec: {
      backoffLimit: 0,
      completions: 1,
      parallelism: 1,
      podReplacementPolicy: 'Failed',
      ttlSecondsAfterFinished: FINISHED_JOB_TTL_SECONDS,
      activeDeadlineSeconds:
        spec.timeoutSeconds + spec.stopGraceSeconds + ARCHIVE_GRACE_SECONDS + s.scheduleTimeoutSeconds + s.pullTimeoutSeconds + 300,
      template: {
        metadata: {
          // Ours last: a run is always found by its labels.
          labels: { ...s.podTemplate?.metadata?.labels, ...labels(spec) },
          ...(s.podTemplate?.metadata?.annotations ? { annotations: s.podTemplate.metadata.annotations } : {}),
        },
        spec: {
          ...s.podTemplate?.spec,
          restartPolicy: 'Never',
          // The pod needs no API access of its own; a template that does (Vault's Kubernetes login) gets it
          // through the pod template's service account.
          automountServiceAccountToken: s.podTemplate?.spec?.automountServiceAccountToken ?? false,
          enableServiceLinks: false,
          ...(s.imagePullSecrets?.length ? { imagePullSecrets: s.imagePullSecrets.map((name) => ({ name })) } : {}),
          terminationGracePeriodSeconds: spec.stopGraceSeconds + ARCHIVE_GRACE_SECONDS,
          initContainers: [
            {
              name: 'install-runner',
              image: s.runnerImage,
              command: ['/pod-runner', 'install', RUNNER_PATH],
              volumeMounts: [{ name: 'runner', mountPath: RUNNER_DIR }],
            },
          ],
          containers: [
            {
              name: TEMPLATE_CONTAINER,
              image: image.ref,
              command: [RUNNER_PATH, 'run', '--', ...image.entrypoint, spec.action],
              env,
              ...(Object.keys(limits).length ? { resources: { limits, requests: limits } } : {}),
              volumeMounts: [
                { name: 'state', mountPath: '/state' },
                { name: 'logs', mountPath: '/logs' },
                { name: 'secrets', mountPath: '/secrets', readOnly: true },
                { name: 'agent', mountPath: AGENT_DIR, readOnly: true },
                { name: 'runner', mountPath: RUNNER_DIR, readOnly: true },
                ...(spec.templateFiles ? [{ name: 'template', mountPath: '/template' }] : []),
              ],
            },
          ],
          volumes: [
            { name: 'state', emptyDir: {} },
            { name: 'logs', emptyDir: {} },
            { name: 'runner', emptyDir: {} },
            ...(spec.templateFiles ? [{ name: 'template', emptyDir: {} }] : []),
            { name: 'secrets', secret: { secretName: name, defaultMode: 0o444, items: [{ key: SECRETS_FILE, path: SECRETS_FILE }] } },
            {
              name: 'agent',
              secret: {
                secretName: name,
                defaultMode: 0o444,
                items: [
                  { key: 'credential', path: 'credential' },
                  { key: PARAMETERS_FILE, path: PARAMETERS_FILE },
                ],
              },
            },
          ],
        },
      },
    },
  };
}
