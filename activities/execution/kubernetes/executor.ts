import { randomBytes } from 'node:crypto';
import {
  ApiException,
  BatchV1Api,
  CoreV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Job,
} from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/common';
import { RunFailure, type RunOutcome, type RunSpec } from '../../../core/domain.js';
import { type ExecutionAdapter, type ExecutionContext } from '../adapter.js';
import { ARCHIVE_GRACE_SECONDS } from '../runner-contract.js';
import { RESULT_WAIT_MS, runOutcome, withLateStop, type RunAgents, type StopReason } from '../outcome.js';
import { ImageAccessDeniedError, ImageNotFoundError, parseImageReference, RegistryUnavailableError, type RegistryClient } from '../image-config.js';
import { jobName, runJob, runSecret, runSelector, type JobSettings } from './job-spec.js';
import { observeRun, type PodObservation } from './observe.js';
import { PodEvents } from './pod-events.js';

/** A pod event wakes the supervisor at once; without one it still looks this often. */
const LOOK_MS = 5_000;
/** While a stopped pod winds down its runner's report is awaited, which no pod event announces. */
const LOOK_WHILE_STOPPING_MS = 1_000;
/** Heartbeats carry the cancel to the activity, so they go on between looks. */
const HEARTBEAT_MS = 1_000;
/**
 * ...but only while the looks themselves go on: a call to the API server that hangs must end in a heartbeat
 * timeout (and a retry that adopts the Job), not in an attempt that beats forever and never looks again.
 */
const STALE_LOOK_MS = 3 * LOOK_MS + RESULT_WAIT_MS;

function status(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

async function orUndefinedIf404<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (status(err) === 404) return undefined;
    throw err;
  }
}

/**
 * An object the API server refuses as invalid or forbidden (a pod template it rejects, a Secret over 1 MiB)
 * is refused again on every retry: the run fails at once, with the server's own words.
 */
function refusedOrRetry(err: unknown, what: string): unknown {
  const code = status(err);
  if (code === undefined || code < 400 || code >= 500 || code === 408 || code === 429) return err;
  return ApplicationFailure.create({ type: RunFailure.Infrastructure, message: `Kubernetes refused the run's ${what} (${code}): ${apiMessage(err)}`, nonRetryable: true });
}

/** The API server's Status message, else the client's. */
function apiMessage(err: unknown): string {
  const body = (err as ApiException<unknown>).body;
  try {
    const parsed = (typeof body === 'string' ? JSON.parse(body) : body) as { message?: unknown } | undefined;
    if (typeof parsed?.message === 'string') return parsed.message;
  } catch {
    // not JSON: the client's message below
  }
  return err instanceof Error ? err.message : String(err);
}


/**
 * Runs a template as one Kubernetes Job per run (activities/execution/kubernetes/job-spec.ts). The adapter
 * only creates, watches and deletes; the pod-runner inside the pod restores /state, streams the log to the
 * agent API and archives /state, and its report is what the outcome is made of.
 */
export class KubernetesExecutor implements ExecutionAdapter {
  private readonly batch: BatchV1Api;
  private readonly core: CoreV1Api;
  private readonly podEvents: PodEvents;

  constructor(
    kubeConfig: KubeConfig,
    private readonly settings: JobSettings,
    private readonly registry: RegistryClient,
    private readonly agents: RunAgents,
  ) {
    this.batch = kubeConfig.makeApiClient(BatchV1Api);
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.podEvents = new PodEvents(kubeConfig, settings.namespace);
  }

  /** Closes the shared pod watch (it also closes itself once no run is supervised). */
  async close(): Promise<void> {
    await this.podEvents.close();
  }

  private get namespace(): string {
    return this.settings.namespace;
  }

  async execute(spec: RunSpec, secrets: Record<string, unknown>, ctx: ExecutionContext): Promise<RunOutcome> {
    const name = jobName(spec.runId);
    let job = await orUndefinedIf404(this.batch.readNamespacedJob({ name, namespace: this.namespace }));
    if (!job) {
      // The run ended while no worker watched it and its Job has since gone (ttlSecondsAfterFinished): the
      // runner's report says how it ended, so the run is not lost.
      if (await this.agents.result(spec.runId)) {
        ctx.log('the Job is gone but its runner reported: the run ended unwatched', { job: name });
        return this.outcome(spec, { kind: 'ended', podName: '', exitCode: undefined, reason: undefined, message: undefined }, spec.cancelNow ? 'cancelled' : undefined);
      }
      if (await this.agents.started(spec.runId)) {
        throw ApplicationFailure.create({
          type: RunFailure.ContainerVanished,
          message: `Job ${this.namespace}/${name} was started but no longer exists`,
          nonRetryable: true,
        });
      }
      if (ctx.signal.aborted) return { status: 'cancelled', message: 'cancelled before the container started' };
      job = await this.create(spec, secrets, ctx);
    } else {
      ctx.log('adopting existing Job', { job: name });
    }
    return this.supervise(job, spec, ctx);
  }

  private async create(spec: RunSpec, secrets: Record<string, unknown>, ctx: ExecutionContext): Promise<V1Job> {
    ctx.heartbeat({ phase: 'preparing' });
    let image;
    try {
      const config = await this.registry.imageConfig(spec.image);
      const ref = parseImageReference(spec.image);
      image = { ref: `${ref.registry}/${ref.repository}@${config.digest}`, entrypoint: config.entrypoint };
    } catch (err) {
      // Missing, refused, or a registry that did not answer within the client's patience (retries included) is
      // final: another attempt would only repeat the wait. Anything else is worth another attempt.
      const final = err instanceof ImageNotFoundError || err instanceof ImageAccessDeniedError || err instanceof RegistryUnavailableError;
      throw ApplicationFailure.create({
        type: RunFailure.ImageUnavailable,
        message: final ? err.message : `image ${spec.image} could not be inspected: ${err instanceof Error ? err.message : String(err)}`,
        nonRetryable: final,
      });
    }
    // The Secret outlives an attempt that died before making the Job; its credential is then reused, so the
    // grant and the Secret always agree.
    const secretName = jobName(spec.runId);
    let credential = `ggr_${randomBytes(24).toString('base64url')}`;
    try {
      await this.core.createNamespacedSecret({ namespace: this.namespace, body: runSecret(spec, this.settings, credential, secrets) });
    } catch (err) {
      if (status(err) !== 409) throw refusedOrRetry(err, 'Secret');
      const existing = await this.core.readNamespacedSecret({ name: secretName, namespace: this.namespace });
      credential = Buffer.from(existing.data?.credential ?? '', 'base64').toString('utf8');
    }
    await this.agents.grant({ runId: spec.runId, deploymentId: spec.deploymentId, restoreVersion: spec.restoreStateVersion, credential });

    let job: V1Job;
    try {
      job = await this.batch.createNamespacedJob({ namespace: this.namespace, body: runJob(spec, this.settings, image) });
      ctx.log('Job created', { job: job.metadata?.name, image: image.ref });
    } catch (err) {
      if (status(err) !== 409) throw refusedOrRetry(err, 'Job');
      // A concurrent attempt made it first: adopt that one.
      job = await this.batch.readNamespacedJob({ name: jobName(spec.runId), namespace: this.namespace });
    }
    // Owned by the Job from now on: Kubernetes removes the Secret with it even if our cleanup never runs.
    await this.core.patchNamespacedSecret(
      {
        name: secretName,
        namespace: this.namespace,
        body: {
          metadata: {
            ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: job.metadata!.name!, uid: job.metadata!.uid!, blockOwnerDeletion: false }],
          },
        },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    return job;
  }

  private async observe(runId: string): Promise<PodObservation> {
    const [job, pods] = await Promise.all([
      orUndefinedIf404(this.batch.readNamespacedJob({ name: jobName(runId), namespace: this.namespace })),
      this.core.listNamespacedPod({ namespace: this.namespace, labelSelector: runSelector(runId) }),
    ]);
    if (!job) return { kind: 'no-pod', jobFailure: 'the Job was deleted' };
    return observeRun(job, pods.items);
  }

  private async supervise(job: V1Job, spec: RunSpec, ctx: ExecutionContext): Promise<RunOutcome> {
    let stopReason: StopReason | undefined = spec.cancelNow ? 'cancelled' : undefined;
    /** A cancel or the deadline came once the template had ended and its runner was archiving: let it finish. */
    let lateStop: StopReason | undefined;
    let stopSentTo: string | undefined;
    let deadline: number | undefined;
    let progress: { phase: string; containerId?: string } = { phase: 'preparing' };
    let lookedAt = Date.now();
    ctx.heartbeat(progress);
    const heartbeat = setInterval(() => {
      if (Date.now() - lookedAt < STALE_LOOK_MS) ctx.heartbeat(progress);
    }, HEARTBEAT_MS);
    try {
      for (;;) {
        if (ctx.abandon?.aborted) {
          throw new Error('stopped watching the run (its workflow ended, was reset, or this worker is stopping); the Job is left running');
        }
        if (!stopReason && !lateStop && ctx.signal.aborted) stopReason = 'cancelled';
        let lookAgainBy = Date.now() + LOOK_MS;
        const seen = await this.observe(spec.runId);
        lookedAt = Date.now();

        if (seen.kind === 'ended') {
          return withLateStop(await this.outcome(spec, seen, stopReason), lateStop);
        }
        if (seen.kind === 'no-pod') {
          if (seen.jobFailure) return await this.outcome(spec, { kind: 'ended', podName: '', exitCode: undefined, reason: 'JobFailed', message: seen.jobFailure }, stopReason);
          progress = { phase: 'preparing' };
        } else if (seen.kind === 'unschedulable' || seen.kind === 'image-pull-failing') {
          const limit = seen.kind === 'unschedulable' ? this.settings.scheduleTimeoutSeconds : this.settings.pullTimeoutSeconds;
          const giveUpAt = seen.since.getTime() + limit * 1000;
          if (stopReason || Date.now() > giveUpAt) {
            // The template never started: nothing to stop or archive, only the Job to remove (cleanup does).
            if (stopReason === 'cancelled') return { status: 'cancelled', message: 'cancelled before the container started' };
            return seen.kind === 'unschedulable'
              ? { status: 'failed', reason: RunFailure.Unschedulable, message: `no node could run the pod within ${limit}s: ${seen.message}` }
              : { status: 'failed', reason: RunFailure.ImageUnavailable, message: `the image could not be pulled within ${limit}s: ${seen.message}` };
          }
          lookAgainBy = Math.min(lookAgainBy, giveUpAt + 1);
          progress = { phase: seen.kind === 'unschedulable' ? 'scheduling' : 'pulling' };
        } else if (seen.kind === 'starting') {
          if (stopReason === 'cancelled' && !(await this.agents.started(spec.runId))) {
            return { status: 'cancelled', message: 'cancelled before the container started' };
          }
          progress = { phase: 'preparing' };
        } else {
          // Counted from the template container's start, so an adopted run keeps its original deadline.
          deadline ??= seen.startedAt.getTime() + spec.timeoutSeconds * 1000;
          if (!stopReason && Date.now() > deadline) stopReason = 'timeout';
          if (stopReason && !stopSentTo && (await this.agents.archiving(spec.runId))) {
            // The template has ended; deleting the pod now would cut the archive short after its grace.
            lateStop ??= stopReason;
            stopReason = undefined;
          }
          if (stopReason && stopSentTo !== seen.podName) {
            ctx.log(`stopping the pod: ${stopReason}`, { pod: seen.podName, graceSeconds: spec.stopGraceSeconds });
            // The pod-runner gets SIGTERM, passes it to the template's process group, SIGKILLs it after the
            // grace, then archives /state and reports before its own, longer, grace runs out.
            await orUndefinedIf404(
              this.core.deleteNamespacedPod({ name: seen.podName, namespace: this.namespace, gracePeriodSeconds: spec.stopGraceSeconds + ARCHIVE_GRACE_SECONDS }),
            );
            stopSentTo = seen.podName;
          }
          if (!stopReason && !lateStop) lookAgainBy = Math.min(lookAgainBy, deadline + 1);
          progress = { phase: stopReason ? 'stopping' : 'executing', containerId: seen.podName };
        }
        // A stopped pod can vanish before we see it end: its runner's report is then the only trace.
        if (stopSentTo) {
          if (await this.agents.result(spec.runId)) {
            return await this.outcome(spec, { kind: 'ended', podName: stopSentTo, exitCode: undefined, reason: undefined, message: undefined }, stopReason);
          }
          lookAgainBy = Math.min(lookAgainBy, Date.now() + LOOK_WHILE_STOPPING_MS);
        }
        // A cancel wakes the wait only until it is acted on; after that it would make this loop spin.
        await this.podEvents.next(spec.runId, Math.max(0, lookAgainBy - Date.now()), [stopReason || lateStop ? undefined : ctx.signal, ctx.abandon]);
      }
    } finally {
      clearInterval(heartbeat);
    }
  }

  private outcome(spec: RunSpec, ended: Extract<PodObservation, { kind: 'ended' }>, stopReason: StopReason | undefined): Promise<RunOutcome> {
    return runOutcome(this.agents, spec, {
      exitCode: ended.exitCode,
      reason: ended.reason,
      message: ended.message,
      oomKilled: ended.reason === 'OOMKilled',
      runnerNeverRan: ended.reason === 'InitContainerFailed' || ended.reason === 'JobFailed',
    }, stopReason);
  }

  async cleanup(runId: string): Promise<void> {
    const name = jobName(runId);
    // Background: the Job goes at once, its pod and Secret follow through the garbage collector; the Secret is
    // also deleted here in case it was never owned (an attempt that died before making the Job).
    await orUndefinedIf404(this.batch.deleteNamespacedJob({ name, namespace: this.namespace, propagationPolicy: 'Background' }));
    await orUndefinedIf404(this.core.deleteNamespacedSecret({ name, namespace: this.namespace }));
  }
}
