import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentResult, AgentStateFailure } from '../../core/db/run-agents.js';
import { RunFailure, isUnreadableStateReason, type RunOutcome, type RunSpec } from '../../core/domain.js';

/** After the container ended, how long the runner's report may take to be visible. */
export const RESULT_WAIT_MS = 15_000;

/** What an adapter needs of the run-agent records (core/db/run-agents.ts): what the runner told the agent API. */
export interface RunAgents {
  grant(g: { runId: string; deploymentId: string; restoreVersion: number | undefined; credential: string }): Promise<void>;
  /** The runner has called in, so the template may have started. */
  started(runId: string): Promise<boolean>;
  result(runId: string): Promise<AgentResult | undefined>;
  /** The runner is storing /state: the template has ended, and stopping the container now would lose the archive. */
  archiving(runId: string): Promise<boolean>;
  /** What the agent API refused about the run's state (a damaged version to restore, an archive over the limit). */
  stateFailure(runId: string): Promise<AgentStateFailure | undefined>;
}

export type StopReason = 'cancelled' | 'timeout';

/** How the run's container ended, as its engine saw it. */
export interface ContainerEnd {
  exitCode: number | undefined;
  /** The engine's word for it (`OOMKilled`, `Error`, …), if any. */
  reason: string | undefined;
  message: string | undefined;
  oomKilled: boolean;
  /** The runner never ran (its install failed, the Job failed before a pod): no report is awaited. */
  runnerNeverRan?: boolean;
}

/**
 * The run's outcome from the runner's report (infra/images/pod-runner) and how its container ended, the
 * same for every target: the adapters only launch, watch, stop and adopt.
 */
export async function runOutcome(agents: RunAgents, spec: RunSpec, ended: ContainerEnd, stopReason: StopReason | undefined): Promise<RunOutcome> {
  let result = await agents.result(spec.runId);
  let stateFailure = await agents.stateFailure(spec.runId);
  const waitUntil = Date.now() + RESULT_WAIT_MS;
  // A runner refused its state to restore reports nothing more: the template never started.
  while (!result && !isUnreadableStateReason(stateFailure?.reason) && Date.now() < waitUntil && !ended.runnerNeverRan) {
    await sleep(500);
    result = await agents.result(spec.runId);
    stateFailure = await agents.stateFailure(spec.runId);
  }
  if (stateFailure) {
    return { status: 'failed', reason: stateFailure.reason, message: stateFailure.message, ...(result ? { exitCode: result.exitCode, warnings: result.warnings } : {}) };
  }
  const oom = ended.oomKilled ? ' (killed: out of memory)' : '';
  if (!result) {
    const why = [ended.reason, ended.message].filter(Boolean).join(': ') || 'no reason given';
    if (ended.oomKilled) {
      return { status: 'failed', reason: RunFailure.ExitCode, exitCode: ended.exitCode, message: `template exited with code ${ended.exitCode ?? 137}${oom}`, warnings: ['/state could not be archived: the container ran out of memory'] };
    }
    if (stopReason === 'cancelled') return { status: 'cancelled', message: 'cancelled on request', warnings: [`/state was not archived (${why})`] };
    return { status: 'failed', reason: RunFailure.Infrastructure, message: `the container ended without the runner's report (${why})` };
  }
  const extras = {
    exitCode: result.exitCode,
    warnings: result.warnings,
    ...(result.outputs ? { outputs: result.outputs } : {}),
    ...(result.stateVersion !== undefined ? { stateVersion: result.stateVersion } : {}),
  };
  if (stopReason === 'cancelled') return { status: 'cancelled', message: 'cancelled on request', ...extras };
  if (!stopReason && result.stateVersion === undefined) {
    // Nothing is lost silently: a template that ended by itself but whose /state was not stored did not succeed.
    const why = result.warnings.find((w) => w.startsWith('archiving /state failed')) ?? 'the runner stored no state version';
    return { status: 'failed', reason: RunFailure.Infrastructure, message: `the template exited with code ${result.exitCode}, but its /state could not be stored: ${why}`, ...extras };
  }
  if (stopReason === 'timeout') {
    return { status: 'failed', reason: RunFailure.Timeout, message: `exceeded the run timeout of ${spec.timeoutSeconds}s`, ...extras };
  }
  if (result.exitCode === 0) return { status: 'succeeded', ...extras };
  return { status: 'failed', reason: RunFailure.ExitCode, message: `template exited with code ${result.exitCode}${oom}`, ...extras };
}

/** A cancel or the deadline that came once the template had ended, while its runner archived: said, not obeyed. */
export function withLateStop(outcome: RunOutcome, lateStop: StopReason | undefined): RunOutcome {
  if (!lateStop) return outcome;
  const why = lateStop === 'cancelled' ? 'a cancel' : 'the run timeout';
  return { ...outcome, warnings: [...(outcome.warnings ?? []), `${why} came while /state was being archived, after the template had ended; the archive was completed`] };
}
