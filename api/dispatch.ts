import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { isGrpcServiceError } from '@temporalio/client';
import type { Deployment } from '../core/db/deployments.js';
import type { Db } from '../core/db/pool.js';
import { finishRun, previousRunSummary, type Run } from '../core/db/runs.js';
import { AppError, ErrorCode } from '../core/errors.js';
import { signalRun } from '../workflows/client.js';
import { cancelSignal, nodeRevokedSignal, deploymentWorkflowId } from '../workflows/messages.js';

import { status as GrpcStatus } from '@grpc/grpc-js';

/**
 * Hands a run that Postgres has accepted to the deployment's workflow. If Temporal refuses, the run is
 * closed as failed at once, so the database never shows a pending run that nothing will execute.
 */
export async function dispatchRun(deps: { db: Db; temporal: Client; taskQueue: string }, deployment: Deployment, run: Run): Promise<Run> {
  try {
    await signalRun(deps, deployment, run, await previousRunSummary(deps.db, deployment, run));
    return run;
  } catch (err) {
    const throttled = isGrpcServiceError(err) && err.code === GrpcStatus.RESOURCE_EXHAUSTED;
    await finishRun(deps.db, run.id, {
      status: 'failed',
      reason: 'infrastructure',
      message: `Temporal did not accept the run: ${err instanceof Error ? err.message : String(err)}`,
    });
    throw throttled
      ? new AppError(ErrorCode.Throttled, 'Temporal is throttling requests; try again shortly', { runId: run.id })
      : new AppError(ErrorCode.DependencyUnavailable, 'the workflow service is unavailable; the run was not started', { runId: run.id });
  }
}

/** Tells the deployment's workflow to cancel the named run (a signal, so a late one cannot hit the next run). */
export async function signalCancel(temporal: Client, deploymentId: string, runId: string, requestedBy: string): Promise<void> {
  try {
    await temporal.workflow.getHandle(deploymentWorkflowId(deploymentId)).signal(cancelSignal, { runId, requestedBy });
  } catch (err) {
    // No workflow runs the deployment (it was terminated): the reconciler resumes the run to stop it.
    if (err instanceof WorkflowNotFoundError) return;
    const throttled = isGrpcServiceError(err) && err.code === GrpcStatus.RESOURCE_EXHAUSTED;
    throw throttled
      ? new AppError(ErrorCode.Throttled, 'Temporal is throttling requests; ask again shortly', { runId })
      : new AppError(ErrorCode.DependencyUnavailable, 'the workflow service is unavailable; the run is marked cancelling, ask again', { runId });
  }
}

/**
 * Tells a run's workflow that its node was revoked: the run ends as node-revoked. Best effort: a workflow
 * that is not running has nothing to end, and a run it has not begun is refused its grant by the node API.
 */
export async function signalNodeRevoked(temporal: Client, deploymentId: string, runId: string): Promise<void> {
  try {
    await temporal.workflow.getHandle(deploymentWorkflowId(deploymentId)).signal(nodeRevokedSignal, { runId });
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return;
    throw new AppError(ErrorCode.DependencyUnavailable, 'the workflow service is unavailable; the node is revoked, but its runs were not told: revoke it again', { runId });
  }
}
