/**
 * The vocabulary shared by the API, the workflows (as types only) and the activities.
 * Kept free of I/O so the workflow sandbox can import its types.
 */

export const RUN_STATUSES = ['pending', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
/** A run in one of these holds the deployment: the database refuses a second one (migration 001). */
export const ACTIVE_RUN_STATUSES = ['pending', 'running', 'cancelling'] as const satisfies readonly RunStatus[];
export type ActiveRunStatus = (typeof ACTIVE_RUN_STATUSES)[number];
export const isActiveRunStatus = (status: string): status is ActiveRunStatus => (ACTIVE_RUN_STATUSES as readonly string[]).includes(status);
export type FinalRunStatus = Exclude<RunStatus, ActiveRunStatus>;

export const RUN_PHASES = ['preparing', 'restoring', 'executing', 'archiving'] as const;
export type RunPhase = (typeof RUN_PHASES)[number];

/**
 * Why a run failed, as a stable machine-readable word: the `reason` of a failed run (its column and the
 * API's field) and the type of the ApplicationFailure an activity throws for it, one vocabulary for both.
 */
export const RunFailure = {
  ExitCode: 'exit-code',
  Timeout: 'timeout',
  NodeUnavailable: 'node-unavailable',
  /** The run's node was revoked while the run was active: its container can no longer be reached. */
  NodeRevoked: 'node-revoked',
  ImageUnavailable: 'image-unavailable',
  /** Kubernetes found no node for the pod within the bound. */
  Unschedulable: 'unschedulable',
  ContainerVanished: 'container-vanished',
  /** The state version to restore is damaged (a chunk missing or altered); the template did not start. */
  StateCorrupt: 'state-corrupt',
  /**
   * The state version to restore was sealed under another encryption key than the installation's (its key
   * changed): no data is damaged, the key must be restored; the template did not start.
   */
  StateKeyMismatch: 'state-key-mismatch',
  /** /state outgrew the deployment's state size limit; the previous version stays current. */
  StateTooLarge: 'state-too-large',
  Infrastructure: 'infrastructure',
} as const;
export type FailureReason = (typeof RunFailure)[keyof typeof RunFailure];
export const FAILURE_REASONS = Object.values(RunFailure) as readonly FailureReason[];
export const isFailureReason = (type: unknown): type is FailureReason => (FAILURE_REASONS as readonly unknown[]).includes(type);

/** Why a template build failed: the `reason` of a failed build and the type of its ApplicationFailure. */
export const BuildFailure = {
  /** The source, or the parameter plan against the type, was refused. */
  SourceRejected: 'source-rejected',
  /** The Dockerfile's build failed (its FROM could not be had, a step failed). */
  BuildFailed: 'build-failed',
  PushFailed: 'push-failed',
  Timeout: 'timeout',
  Infrastructure: 'infrastructure',
} as const;
export type BuildFailureReason = (typeof BuildFailure)[keyof typeof BuildFailure];
/** Failures a retry cannot mend: the source, the Dockerfile's FROM, or the registry said no. */
export const FINAL_BUILD_FAILURES: readonly BuildFailureReason[] = [BuildFailure.SourceRejected, BuildFailure.BuildFailed, BuildFailure.PushFailed, BuildFailure.Timeout];

/**
 * Why a state version cannot be read, and its run ends before the template starts: `state-corrupt`, its
 * stored chunks are missing, altered or not its own (roll back to an earlier version); `state-key-mismatch`,
 * it was sealed under another encryption key (every version sealed under that key is alike: restore the
 * key, a rollback cannot help).
 */
export const UNREADABLE_STATE_REASONS = [RunFailure.StateCorrupt, RunFailure.StateKeyMismatch] as const satisfies readonly FailureReason[];
export type UnreadableStateReason = (typeof UNREADABLE_STATE_REASONS)[number];
export const isUnreadableStateReason = (reason: unknown): reason is UnreadableStateReason =>
  (UNREADABLE_STATE_REASONS as readonly unknown[]).includes(reason);

/** A deployment mirrors its active run, else its last run's outcome; `new` before any run. */
export const DEPLOYMENT_STATUSES = ['new', ...RUN_STATUSES, 'destroyed'] as const;
export type DeploymentStatus = (typeof DEPLOYMENT_STATUSES)[number];

export const PARAMETER_TYPES = ['string', 'number', 'integer', 'boolean', 'object', 'array'] as const;
export type ParameterType = (typeof PARAMETER_TYPES)[number];

export interface ParameterDeclaration {
  name: string;
  type: ParameterType;
  required: boolean;
  default?: unknown;
  sensitive: boolean;
  description?: string;
}

export type Target = { kind: 'cluster' } | { kind: 'node'; node: string };

/** A run's limits; unset fields inherit (deployment → template version → installation default). */
export interface RunLimits {
  timeoutSeconds?: number | undefined;
  cpus?: number | undefined;
  memoryMb?: number | undefined;
  /** The largest /state archive a run may store, MiB (core/db/state.ts stateLimitBytes). */
  stateMaxMb?: number | undefined;
}

/** The limits a run gets: the most specific setting wins, and the timeout never exceeds the maximum. */
export function effectiveLimits(
  deployment: RunLimits,
  version: RunLimits,
  defaults: { timeoutSeconds: number; maxTimeoutSeconds: number },
): { timeoutSeconds: number; cpus?: number | undefined; memoryMb?: number | undefined } {
  const timeout = deployment.timeoutSeconds ?? version.timeoutSeconds ?? defaults.timeoutSeconds;
  return {
    timeoutSeconds: Math.min(timeout, defaults.maxTimeoutSeconds),
    cpus: deployment.cpus ?? version.cpus,
    memoryMb: deployment.memoryMb ?? version.memoryMb,
  };
}

/** The Temporal task queue that executes runs for a target. */
export function targetTaskQueue(target: Target, clusterQueue: string): string {
  return target.kind === 'cluster' ? clusterQueue : `node-${target.node}`;
}

/** The builder worker's task queue (template image builds), beside the cluster worker's. */
export function builderTaskQueue(clusterQueue: string): string {
  return `${clusterQueue}-builds`;
}

/** A short label for a target, used in search attributes and logs. */
export function targetLabel(target: Target): string {
  return target.kind === 'cluster' ? 'cluster' : `node:${target.node}`;
}

export const CONTRACT_VERSION = '1';

/** Everything the execution adapter needs to run one container; contains no secret values. */
export interface RunSpec {
  runId: string;
  deploymentId: string;
  action: string;
  image: string;
  /** Non-sensitive parameter values, written to /state/template-parameters.json. */
  parameters: Record<string, unknown>;
  env: Record<string, string>;
  timeoutSeconds: number;
  stopGraceSeconds: number;
  /** Stop the template at once (a run being cancelled when its workflow was replaced): adopt, stop, archive. */
  cancelNow?: boolean | undefined;
  /** Bytes of each stream kept for this run. */
  logMaxBytes?: number | undefined;
  /** Container limits; unset means none. */
  cpus?: number | undefined;
  memoryMb?: number | undefined;
  /** An ad-hoc template's files (a stored source): unpacked read-only at /template for the run. */
  templateFiles?: { sourceId: string; sha256: string } | undefined;
  /** The state version to restore into /state first (none for a deployment's first run). */
  restoreStateVersion?: number | undefined;
  /** Sensitive values sealed to the executing node's key (core/crypto.ts): opaque in Temporal's history. */
  secrets?: { v: 1; epk: string; nonce: string; tag: string; ct: string } | undefined;
}

export interface RunOutcome {
  status: FinalRunStatus;
  reason?: FailureReason;
  exitCode?: number;
  message?: string;
  /** From /state/outputs.json, when the template wrote a valid one. */
  outputs?: Record<string, unknown>;
  /** Problems worth telling the operator that did not fail the run (e.g. an invalid outputs file). */
  warnings?: string[];
  /** The state version this run's /state was archived as. */
  stateVersion?: number;
}

/** The deployment workflow's answer to the `status` query and the API's `GET /deployments/{id}` agree on these. */
/**
 * A run as the deployment workflow reports it (its `status` query). Its phase is not here: that is the
 * runner's to tell, in Postgres (GET /v1/runs/{id}).
 */
export interface RunSummary {
  id: string;
  action: string;
  status: RunStatus;
  reason?: FailureReason | undefined;
  exitCode?: number | undefined;
}

export interface DeploymentStatusView {
  deploymentId: string;
  status: DeploymentStatus;
  activeRun?: RunSummary | undefined;
  lastRun?: RunSummary | undefined;
}

/** The deployment status that follows from a run's status and action. */
export function deploymentStatusFor(run: { status: RunStatus; action: string }): DeploymentStatus {
  if (run.status === 'succeeded' && run.action === 'destroy') return 'destroyed';
  return run.status;
}
