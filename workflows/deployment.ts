import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  TimeoutFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { TimeoutType } from '@temporalio/common';
import type { RunActivities, RunTransition } from '../activities/runs.js';
import type { NodeActivities } from '../activities/node.js';
import { RunFailure, isActiveRunStatus, isFailureReason, type RunOutcome, type RunSpec, type RunSummary } from '../core/domain.js';
import {
  StatusSearchAttribute,
  cancelSignal,
  nodeRevokedSignal,
  runRequestedSignal,
  statusQuery,
  type DeploymentWorkflowInput,
  type RunRequest,
} from './messages.js';

/** The patch after which the workflow no longer writes a run's phase (workflow versioning: patched()). */
const PHASE_OWNED_BY_RUNNER = 'phase-owned-by-runner';
/**
 * The patch after which a node fetches its run's grant (spec and sealed secrets) through the gateway: the
 * workflow no longer asks the node for its key, nor hands it the spec (docs/remote-nodes.md).
 */
const GRANT_FROM_NODE_API = 'grant-from-node-api';

/** Continue-as-new well before Temporal's history limits (51,200 events); a run takes ~30 events. */
const MAX_HISTORY_EVENTS = 5_000;
/** Restore plus archive of a run's /state: 6 hours covers the default 4 GiB limit at 0.2 MiB/s. */
const STORAGE_ALLOWANCE_SECONDS = 6 * 3600;

const db = proxyActivities<RunActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/**
 * One deployment, for as long as it exists. Runs arrive as signals after the API has recorded them as
 * pending in Postgres (which alone decides whether a run may start); this entity executes them one at a time,
 * keeps Postgres and its own `status` in step, and is the only place a run's container is started or removed.
 */
export class DeploymentEntity {
  private readonly state: DeploymentWorkflowInput;
  private active: RunSummary | undefined;
  private activeScope: CancellationScope | undefined;
  private readonly cancelRequested = new Set<string>();
  private readonly revoked = new Set<string>();

  constructor(input: DeploymentWorkflowInput) {
    this.state = { ...input, pending: [...input.pending] };
  }

  async run(): Promise<never> {
    setHandler(statusQuery, () => ({
      deploymentId: this.state.deploymentId,
      status: this.state.status,
      activeRun: this.active,
      lastRun: this.state.lastRun,
    }));
    setHandler(runRequestedSignal, (req) => this.enqueue(req));
    setHandler(cancelSignal, ({ runId }) => this.cancel(runId));
    setHandler(nodeRevokedSignal, ({ runId }) => {
      this.revoked.add(runId);
      this.cancel(runId);
    });

    try {
      for (;;) {
        await condition(() => this.state.pending.length > 0 || this.shouldContinueAsNew());
        const next = this.state.pending.shift();
        if (next) {
          await this.execute(next);
          continue;
        }
        await condition(allHandlersFinished);
        if (this.state.pending.length === 0) {
          return continueAsNew<(input: DeploymentWorkflowInput) => Promise<never>>(this.state);
        }
      }
    } catch (err) {
      // Cancelling the workflow (the Temporal UI's "Cancel", `temporal workflow cancel`) means: cancel the
      // current run (done by the scope it runs in), cancel the runs still queued, record it all, then end.
      // The next run request starts the workflow afresh.
      if (isCancellation(err)) await CancellationScope.nonCancellable(() => this.cancelQueued());
      throw err;
    }
  }

  private async cancelQueued(): Promise<void> {
    for (const req of this.state.pending.splice(0)) {
      this.apply(await db.finishRun(req.runId, { status: 'cancelled', message: 'the deployment workflow was cancelled' }));
    }
  }

  private shouldContinueAsNew(): boolean {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength > (this.state.continueAsNewAfterEvents ?? MAX_HISTORY_EVENTS);
  }

  /** Signals are delivered at least once (the API may retry), so a run id is queued once only. */
  private enqueue(req: RunRequest): void {
    const known =
      this.active?.id === req.runId ||
      this.state.lastRun?.id === req.runId ||
      this.state.pending.some((p) => p.runId === req.runId);
    if (!known) this.state.pending.push(req);
  }

  private cancel(runId: string): void {
    this.cancelRequested.add(runId);
    if (this.active?.id === runId) this.activeScope?.cancel();
  }

  private apply(t: RunTransition): void {
    this.state.status = t.deploymentStatus;
    if (isActiveRunStatus(t.run.status)) this.active = t.run;
    else {
      this.active = undefined;
      this.state.lastRun = t.run;
    }
    upsertSearchAttributes([{ key: StatusSearchAttribute, value: t.deploymentStatus }]);
  }

  private async execute(req: RunRequest): Promise<void> {
    this.active = { id: req.runId, action: req.action, status: 'pending' };
    let started: Awaited<ReturnType<RunActivities['startRun']>>;
    try {
      started = await db.startRun(req.runId);
    } catch (err) {
      // The workflow itself was cancelled before the run began: no container exists; close the run.
      if (isCancellation(err)) {
        await CancellationScope.nonCancellable(async () => {
          this.apply(await db.finishRun(req.runId, { status: 'cancelled', message: 'the deployment workflow was cancelled' }));
        });
      }
      throw err;
    }
    this.apply(started);
    if (started.run.status === 'cancelling' && !started.spec) {
      // Cancelled through the API while it was still pending: it never starts.
      this.apply(await db.finishRun(req.runId, { status: 'cancelled', message: 'cancelled before it started' }));
      return;
    }
    if (!started.spec) return; // ended before it began

    const spec = started.spec;
    const node = this.targetActivities(spec, { scheduleToStartTimeout: `${started.nodeWaitSeconds} seconds` });

    let outcome: RunOutcome;
    if (this.revoked.has(spec.runId)) {
      outcome = revokedOutcome;
    } else if (this.cancelRequested.has(spec.runId)) {
      outcome = { status: 'cancelled', message: 'cancelled before the container started' };
    } else {
      outcome = await this.executeOnTarget(node, spec, started.hasSecrets);
      if (this.revoked.has(spec.runId)) outcome = revokedOutcome;
    }
    // Whatever happened above, the outcome is recorded and the container removed, even if this workflow is being cancelled.
    await CancellationScope.nonCancellable(async () => {
      this.apply(await db.finishRun(spec.runId, outcome));
      // A revoked node is refused every call: the cleanup would wait for it in vain. A run its target never
      // took has nothing to clean up (its grant is refused from now on), and an offline node would hold the
      // deployment's next run for as long as the cleanup waits for it.
      if (this.revoked.has(spec.runId)) return;
      if (patched(GRANT_FROM_NODE_API) && !(await db.runGranted(spec.runId))) return;
      try {
        await node.cleanupRun(spec.runId);
      } catch (err) {
        log.warn('could not remove the run container; the node worker removes it when it next starts', {
          runId: spec.runId,
          error: String(err),
        });
      }
    });
  }

  /** The run's target: a node's task queue, or the cluster worker's for the `cluster` target. */
  private targetActivities(spec: RunSpec, bound: { scheduleToStartTimeout: string } | { scheduleToCloseTimeout: string }): NodeActivities {
    return proxyActivities<NodeActivities>({
      taskQueue: this.state.target.kind === 'node' ? `node-${this.state.target.node}` : this.state.clusterTaskQueue,
      // A node that is down never picks the task up: that is a clear failure, not an endless wait.
      ...bound,
      // The adapter enforces the run timeout itself; this is only a backstop. Restoring and archiving a large
      // /state come on top of the run and heartbeat while they move (a stalled store stops the heartbeats),
      // so they get a storage allowance rather than a share of the run's timeout.
      startToCloseTimeout: `${backstopSeconds(spec)} seconds`,
      heartbeatTimeout: '20 seconds',
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      retry: { initialInterval: '1 second', maximumInterval: '10 seconds', maximumAttempts: 10 },
    });
  }

  /**
   * Executes the run on its target. A node that took the run's grant and then went away (a cut link, a
   * restart) may still be applying it: the run then waits for the node to come back and adopt its container,
   * bounded by the run's own timeout, instead of failing while its template goes on.
   */
  private async executeGranted(node: NodeActivities, spec: RunSpec): Promise<RunOutcome> {
    const input = { runId: spec.runId, ...(spec.cancelNow ? { cancelNow: true } : {}) };
    const deadline = Date.now() + backstopSeconds(spec) * 1000;
    try {
      return await node.executeRun(input);
    } catch (err) {
      if (!isTimeout(err, TimeoutType.SCHEDULE_TO_START) || !(await db.runGranted(spec.runId))) throw err;
      const remainingSeconds = Math.floor((deadline - Date.now()) / 1000);
      if (remainingSeconds <= 0) throw err;
      log.warn('the run\'s node took it and went away; waiting for it to come back, within the run\'s timeout', { runId: spec.runId, remainingSeconds });
      return await this.targetActivities(spec, { scheduleToCloseTimeout: `${remainingSeconds} seconds` }).executeRun(input);
    }
  }

  private async executeOnTarget(node: NodeActivities, spec: RunSpec, hasSecrets: boolean): Promise<RunOutcome> {
    const scope = new CancellationScope();
    this.activeScope = scope;
    try {
      return await scope.run(async () => {
        if (patched(GRANT_FROM_NODE_API)) {
          // The target takes what to execute, and the secrets sealed to its pinned key, from the database
          // (a node through the node API): nothing in the task is trusted, nothing secret enters the history.
          return await this.executeGranted(node, spec);
        }
        // Histories from before: sensitive values sealed to the key the target reported, the spec in the task.
        const legacy = node as unknown as LegacyTargetActivities;
        const secrets = hasSecrets ? await db.sealRunSecrets(spec.runId, await legacy.nodePublicKey()) : undefined;
        // The phase is the runner's to tell (through the agent API, in Postgres). Executions from before it was
        // marked the hand-off themselves; their histories replay that call.
        if (!patched(PHASE_OWNED_BY_RUNNER)) this.apply(await db.setRunPhase(spec.runId, 'executing'));
        return legacy.executeRun({ ...spec, secrets });
      });
    } catch (err) {
      return outcomeOfFailure(err);
    } finally {
      this.activeScope = undefined;
    }
  }
}

/** What a target's activities were before GRANT_FROM_NODE_API: kept so that older histories replay. */
interface LegacyTargetActivities {
  nodePublicKey(): Promise<string>;
  executeRun(spec: RunSpec): Promise<RunOutcome>;
}

const revokedOutcome: RunOutcome = {
  status: 'failed',
  reason: RunFailure.NodeRevoked,
  message: 'the run\'s node was revoked while the run was active; what its container did after that is not known',
};

function backstopSeconds(spec: RunSpec): number {
  return spec.timeoutSeconds + spec.stopGraceSeconds + 120 + STORAGE_ALLOWANCE_SECONDS;
}

function isTimeout(err: unknown, type: TimeoutType): boolean {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  return cause instanceof TimeoutFailure && cause.timeoutType === type;
}

function outcomeOfFailure(err: unknown): RunOutcome {
  if (isCancellation(err)) return { status: 'cancelled', message: 'cancelled on request' };
  const cause = err instanceof ActivityFailure ? err.cause : err;
  if (isTimeout(err, TimeoutType.SCHEDULE_TO_START)) {
    return { status: 'failed', reason: RunFailure.NodeUnavailable, message: 'no worker of the target node picked the run up in time' };
  }
  if (isTimeout(err, TimeoutType.SCHEDULE_TO_CLOSE)) {
    return {
      status: 'failed',
      reason: RunFailure.NodeUnavailable,
      message: 'the run\'s node took it, went away, and did not come back within the run\'s timeout; what its container did since is not known',
    };
  }
  if (cause instanceof ApplicationFailure && isFailureReason(cause.type)) {
    return { status: 'failed', reason: cause.type, message: cause.message };
  }
  return {
    status: 'failed',
    reason: RunFailure.Infrastructure,
    message: cause instanceof Error ? cause.message : 'the run could not be executed',
  };
}

export async function deploymentWorkflow(input: DeploymentWorkflowInput): Promise<never> {
  return new DeploymentEntity(input).run();
}
