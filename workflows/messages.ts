/**
 * Signals, queries and search attributes of the deployment workflow: the one definition shared by the
 * workflow, the API and anyone using the `temporal` CLI (`--name cancel`, `--type status`).
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { DeploymentStatus, DeploymentStatusView, RunSummary, Target } from '../core/domain.js';

export interface RunRequest {
  runId: string;
  action: string;
}

/** A run the API has already recorded as pending in Postgres; the workflow executes runs in arrival order. */
export const runRequestedSignal = defineSignal<[RunRequest]>('runRequested');

/** Names the run it cancels, so a late cancel cannot hit the next run. */
export const cancelSignal = defineSignal<[{ runId: string; requestedBy?: string }]>('cancel');

/** The run's node was revoked: the run ends as node-revoked (its container can no longer be reached). */
export const nodeRevokedSignal = defineSignal<[{ runId: string }]>('nodeRevoked');
export const statusQuery = defineQuery<DeploymentStatusView>('status');

export const deploymentWorkflowId = (deploymentId: string): string => `deployment-${deploymentId}`;

/** Registered on the Temporal server by infra/dev (and by the tests) so the UI can filter on them. */
export const StatusSearchAttribute = defineSearchAttributeKey('GliderGunStatus', SearchAttributeType.KEYWORD);
export const TemplateSearchAttribute = defineSearchAttributeKey('GliderGunTemplate', SearchAttributeType.KEYWORD);
export const TargetSearchAttribute = defineSearchAttributeKey('GliderGunTarget', SearchAttributeType.KEYWORD);
export const SEARCH_ATTRIBUTES = [StatusSearchAttribute, TemplateSearchAttribute, TargetSearchAttribute];

/** Workflow input, and the state carried across continue-as-new: JSON-safe only. */
export interface DeploymentWorkflowInput {
  deploymentId: string;
  template: string;
  target: Target;
  /** The task queue of the cluster worker, where the database activities run. */
  clusterTaskQueue: string;
  status: DeploymentStatus;
  pending: RunRequest[];
  lastRun?: RunSummary | undefined;
  /** Continue as new once idle past this many history events (tests set it low). */
  continueAsNewAfterEvents?: number | undefined;
}
