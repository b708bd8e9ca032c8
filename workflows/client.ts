/**
 * The client side of the deployment workflow: how the API and the run reconciler hand a run to it. Client
 * code, so it lives outside the import graph of index.ts (the workflow bundle) and imports no workflow code.
 */
import { WorkflowIdConflictPolicy, type Client } from '@temporalio/client';
import type { Deployment } from '../core/db/deployments.js';
import type { Run } from '../core/db/runs.js';
import { targetLabel, type RunSummary } from '../core/domain.js';
import {
  StatusSearchAttribute,
  TargetSearchAttribute,
  TemplateSearchAttribute,
  deploymentWorkflowId,
  runRequestedSignal,
  type DeploymentWorkflowInput,
} from './messages.js';

/**
 * Signals the run to the deployment's workflow, starting a new execution if none is running (from
 * `lastRun`, the deployment's run before this one). Safe to repeat: the workflow queues a run id once.
 */
export async function signalRun(
  deps: { temporal: Client; taskQueue: string },
  deployment: Deployment,
  run: Run,
  lastRun: RunSummary | undefined,
): Promise<void> {
  const input: DeploymentWorkflowInput = {
    deploymentId: deployment.id,
    template: deployment.template.name,
    target: deployment.target,
    clusterTaskQueue: deps.taskQueue,
    status: deployment.status,
    pending: [],
    lastRun,
  };
  await deps.temporal.workflow.signalWithStart('deploymentWorkflow', {
    workflowId: deploymentWorkflowId(deployment.id),
    taskQueue: deps.taskQueue,
    args: [input],
    signal: runRequestedSignal,
    signalArgs: [{ runId: run.id, action: run.action }],
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    typedSearchAttributes: [
      { key: StatusSearchAttribute, value: deployment.status },
      { key: TemplateSearchAttribute, value: deployment.template.name },
      { key: TargetSearchAttribute, value: targetLabel(deployment.target) },
    ],
  });
}
