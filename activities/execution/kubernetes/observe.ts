import type { V1ContainerStatus, V1Job, V1Pod } from '@kubernetes/client-node';
import { TEMPLATE_CONTAINER } from './job-spec.js';

/** What a run's Job and pod say, reduced to what the adapter acts on. */
export type PodObservation =
  | { kind: 'no-pod'; jobFailure?: string | undefined }
  | { kind: 'unschedulable'; message: string; since: Date }
  | { kind: 'image-pull-failing'; message: string; since: Date }
  | { kind: 'starting'; detail: string }
  | { kind: 'running'; podName: string; startedAt: Date }
  | { kind: 'ended'; podName: string; exitCode: number | undefined; reason: string | undefined; message: string | undefined };

const PULL_FAILURES = new Set(['ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'ErrImageNeverPull', 'RegistryUnavailable']);

function when(value: Date | string | undefined): Date {
  const d = value instanceof Date ? value : value ? new Date(value) : new Date();
  return Number.isNaN(d.getTime()) ? new Date() : d;
}

/** Pure: the Job and the pods labelled with its run (at most one, as the Job never replaces its pod). */
export function observeRun(job: V1Job, pods: readonly V1Pod[]): PodObservation {
  const live = pods.filter((p) => !p.metadata?.deletionTimestamp || p.status?.phase === 'Running' || p.status?.phase === 'Pending');
  const pod = live[0] ?? pods[0];
  if (!pod) {
    const failed = job.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True');
    return { kind: 'no-pod', jobFailure: failed ? `${failed.reason ?? 'Failed'}: ${failed.message ?? ''}`.trim() : undefined };
  }
  const podName = pod.metadata?.name ?? '';
  const template = pod.status?.containerStatuses?.find((c) => c.name === TEMPLATE_CONTAINER);
  const terminated = template?.state?.terminated;
  if (terminated || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') {
    return { kind: 'ended', podName, exitCode: terminated?.exitCode, reason: terminated?.reason ?? pod.status?.reason, message: terminated?.message ?? pod.status?.message };
  }
  if (template?.state?.running) return { kind: 'running', podName, startedAt: when(template.state.running.startedAt) };

  const scheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
  if (scheduled?.status === 'False' && scheduled.reason === 'Unschedulable') {
    return { kind: 'unschedulable', message: scheduled.message ?? 'no node can run the pod', since: when(pod.metadata?.creationTimestamp) };
  }
  const statuses: V1ContainerStatus[] = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
  const pulling = statuses.find((c) => c.state?.waiting?.reason && PULL_FAILURES.has(c.state.waiting.reason));
  if (pulling) {
    return {
      kind: 'image-pull-failing',
      message: `${pulling.image}: ${pulling.state?.waiting?.reason}${pulling.state?.waiting?.message ? ` (${pulling.state.waiting.message})` : ''}`,
      since: when(pod.metadata?.creationTimestamp),
    };
  }
  const initFailed = pod.status?.initContainerStatuses?.find((c) => c.state?.terminated && c.state.terminated.exitCode !== 0);
  if (initFailed) {
    return { kind: 'ended', podName, exitCode: undefined, reason: 'InitContainerFailed', message: `${initFailed.name} exited with ${initFailed.state?.terminated?.exitCode}` };
  }
  const waiting = statuses.find((c) => c.state?.waiting)?.state?.waiting;
  return { kind: 'starting', detail: waiting?.reason ?? pod.status?.phase ?? 'Pending' };
}
