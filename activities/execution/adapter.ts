import type { RunOutcome, RunSpec } from '../../core/domain.js';

/** What an execution needs from the activity that drives it, so adapters stay free of Temporal. */
export interface ExecutionContext {
  /** Aborted when the run is cancelled: the adapter stops the container (SIGTERM, grace, SIGKILL) and reports `cancelled`. */
  signal: AbortSignal;
  /**
   * Aborted when this attempt must stop watching but the run goes on (its workflow was terminated or
   * reset, the worker is shutting down, the attempt timed out): the adapter leaves the container running
   * and fails, so whoever resumes the run adopts it.
   */
  abandon?: AbortSignal;
  /** Called at least every few seconds while the container runs; progress is shown in the Temporal UI. */
  heartbeat(details: { phase: string; containerId?: string; bytes?: number }): void;
  log(message: string, fields?: Record<string, unknown>): void;
}

/**
 * Runs one template container per run (Docker on a node, a Job on Kubernetes). Implementations must be
 * idempotent per run id: a second `execute` of the same run adopts the container started by the first.
 */
export interface ExecutionAdapter {
  /** `secrets` are the sensitive values, delivered as /secrets/template-secrets.json on a memory-backed mount. */
  execute(spec: RunSpec, secrets: Record<string, unknown>, ctx: ExecutionContext): Promise<RunOutcome>;
  /** Removes what the run left behind. Called only after the run's outcome is recorded. */
  cleanup(runId: string): Promise<void>;
}

export const containerName = (runId: string): string => `gg-${runId}`;

/** Labels on everything an adapter creates, so leftovers can be found (and the tests can assert there are none). */
export const MANAGED_LABEL = 'io.glider-gun.managed';
export const RUN_LABEL = 'io.glider-gun.run';
export const DEPLOYMENT_LABEL = 'io.glider-gun.deployment';
/** The directory a run's files live in on the node (its work dir), so leftovers can be traced to a node. */
export const WORKDIR_LABEL = 'io.glider-gun.workdir';
