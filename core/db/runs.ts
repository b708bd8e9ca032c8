import {
  ACTIVE_RUN_STATUSES,
  deploymentStatusFor,
  isActiveRunStatus,
  type FailureReason,
  type RunOutcome,
  type RunPhase,
  type RunStatus,
  type RunSummary,
} from '../domain.js';
import { AppError, ErrorCode } from '../errors.js';
import { PgCode, inTransaction, pgConstraint, pgErrorCode, type Db, type Queryable } from './pool.js';

export interface Run {
  id: string;
  deploymentId: string;
  action: string;
  status: RunStatus;
  phase: RunPhase | null;
  reason: FailureReason | null;
  message: string | null;
  exitCode: number | null;
  outputs: Record<string, unknown> | null;
  warnings: string[];
  stateVersionFrom: number | null;
  stateVersion: number | null;
  requestedBy: string;
  cancelRequestedBy: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

interface RunRow {
  id: string;
  seq: string;
  deployment_id: string;
  action: string;
  status: RunStatus;
  phase: RunPhase | null;
  reason: FailureReason | null;
  message: string | null;
  exit_code: number | null;
  outputs: Record<string, unknown> | null;
  warnings: string[];
  state_version_from: number | null;
  state_version: number | null;
  requested_by: string;
  cancel_requested_by: string | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

const toRun = (r: RunRow): Run => ({
  id: r.id,
  deploymentId: r.deployment_id,
  action: r.action,
  status: r.status,
  phase: r.phase,
  reason: r.reason,
  message: r.message,
  exitCode: r.exit_code,
  outputs: r.outputs,
  warnings: r.warnings,
  stateVersionFrom: r.state_version_from,
  stateVersion: r.state_version,
  requestedBy: r.requested_by,
  cancelRequestedBy: r.cancel_requested_by,
  createdAt: r.created_at.toISOString(),
  startedAt: r.started_at?.toISOString() ?? null,
  finishedAt: r.finished_at?.toISOString() ?? null,
});

export function runSummary(run: Run): RunSummary {
  return {
    id: run.id,
    action: run.action,
    status: run.status,
    reason: run.reason ?? undefined,
    exitCode: run.exitCode ?? undefined,
  };
}

/** The deployment's run before `run`: where a new execution of the deployment's workflow starts from. */
export async function previousRunSummary(db: Queryable, deployment: { lastRunId: string | null }, run: { id: string }): Promise<RunSummary | undefined> {
  const previous = deployment.lastRunId && deployment.lastRunId !== run.id ? await getRun(db, deployment.lastRunId) : undefined;
  return previous && runSummary(previous);
}

/**
 * Records a new pending run. The partial unique index `runs_one_active_per_deployment` makes the
 * database itself refuse a second active run, however many requests race.
 */
export async function insertRun(
  db: Db,
  r: { id: string; deploymentId: string; action: string; requestedBy: string },
): Promise<Run> {
  try {
    return await inTransaction(db, async (tx) => {
      // Serialises with a rollback or a purge of the same deployment (they hold this lock throughout).
      const locked = await tx.query('SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE', [r.deploymentId]);
      if (locked.rowCount === 0) throw new AppError(ErrorCode.DeploymentNotFound, `deployment '${r.deploymentId}' does not exist`, { id: r.deploymentId });
      const { rows } = await tx.query<RunRow>(
        `INSERT INTO runs (id, deployment_id, action, requested_by) VALUES ($1, $2, $3, $4) RETURNING *`,
        [r.id, r.deploymentId, r.action, r.requestedBy],
      );
      await tx.query(
        `UPDATE deployments SET status = 'pending', last_run_id = $2, updated_at = now() WHERE id = $1`,
        [r.deploymentId, r.id],
      );
      return toRun(rows[0]!);
    });
  } catch (err) {
    if (pgErrorCode(err) === PgCode.UniqueViolation && pgConstraint(err) === 'runs_one_active_per_deployment') {
      const active = await getActiveRun(db, r.deploymentId);
      throw new AppError(
        ErrorCode.RunInProgress,
        `deployment '${r.deploymentId}' already has an active run${active ? ` (${active.id}, ${active.status})` : ''}; wait for it to end or cancel it`,
        { deploymentId: r.deploymentId, activeRunId: active?.id },
      );
    }
    throw err;
  }
}

export async function getRun(db: Queryable, id: string): Promise<Run | undefined> {
  const { rows } = await db.query<RunRow>('SELECT * FROM runs WHERE id = $1', [id]);
  return rows[0] && toRun(rows[0]);
}

/** Several runs in one query (for pages of deployments and their last runs). */
export async function getRuns(db: Queryable, ids: readonly string[]): Promise<Map<string, Run>> {
  if (ids.length === 0) return new Map();
  const { rows } = await db.query<RunRow>('SELECT * FROM runs WHERE id = ANY($1)', [ids]);
  return new Map(rows.map((r) => [r.id, toRun(r)]));
}

export async function getActiveRun(db: Queryable, deploymentId: string): Promise<Run | undefined> {
  const { rows } = await db.query<RunRow>(`SELECT * FROM runs WHERE deployment_id = $1 AND status = ANY($2::text[])`, [
    deploymentId,
    ACTIVE_RUN_STATUSES,
  ]);
  return rows[0] && toRun(rows[0]);
}

/** Newest first. */
export async function listRuns(
  db: Queryable,
  deploymentId: string,
  opts: { limit: number; beforeSeq?: number | undefined },
): Promise<{ items: Run[]; nextSeq: number | null }> {
  const args: unknown[] = [deploymentId, opts.limit + 1];
  let cond = '';
  if (opts.beforeSeq !== undefined) {
    args.push(opts.beforeSeq);
    cond = 'AND seq < $3';
  }
  const { rows } = await db.query<RunRow>(
    `SELECT * FROM runs WHERE deployment_id = $1 ${cond} ORDER BY seq DESC LIMIT $2`,
    args,
  );
  const page = rows.slice(0, opts.limit);
  const last = page[page.length - 1];
  return { items: page.map(toRun), nextSeq: rows.length > opts.limit && last ? Number(last.seq) : null };
}

/**
 * Every transaction that changes a run and its deployment takes the deployment's row lock first (as
 * insertRun does), so two of them never wait on each other in opposite orders (a deadlock).
 */
async function lockDeploymentOfRun(tx: Queryable, runId: string): Promise<void> {
  await tx.query('SELECT 1 FROM deployments WHERE id = (SELECT deployment_id FROM runs WHERE id = $1) FOR UPDATE', [runId]);
}

/** Keeps the deployment's status in step with its latest run, in the same transaction as the run's change. */
async function syncDeployment(tx: Queryable, run: Run): Promise<void> {
  await tx.query(
    `UPDATE deployments SET status = $3, updated_at = now() WHERE id = $1 AND last_run_id = $2 AND status <> $3`,
    [run.deploymentId, run.id, deploymentStatusFor(run)],
  );
}

/**
 * Each transition is conditional on the statuses it may leave, so a retried activity changes nothing twice
 * and a late transition cannot reopen a finished run. Each returns the run as it now is.
 */
export async function markRunStarted(db: Db, runId: string): Promise<Run | undefined> {
  return inTransaction(db, async (tx) => {
    await lockDeploymentOfRun(tx, runId);
    const { rows } = await tx.query<RunRow>(
      `UPDATE runs SET status = 'running', phase = 'preparing', started_at = now(),
              state_version_from = (SELECT current_state_version FROM deployments WHERE deployments.id = runs.deployment_id)
        WHERE id = $1 AND status = 'pending' RETURNING *`,
      [runId],
    );
    if (rows[0]) await syncDeployment(tx, toRun(rows[0]));
    return getRun(tx, runId);
  });
}

/**
 * Marks an active run as being cancelled and records who asked. Idempotent: a second request while it is
 * `cancelling` changes nothing. Returns undefined when the run has already ended.
 */
export async function requestRunCancel(db: Db, runId: string, by: string): Promise<Run | undefined> {
  return inTransaction(db, async (tx) => {
    await lockDeploymentOfRun(tx, runId);
    const { rows } = await tx.query<RunRow>(
      `UPDATE runs SET status = 'cancelling', cancel_requested_by = $2, cancel_requested_at = now()
        WHERE id = $1 AND status IN ('pending', 'running') RETURNING *`,
      [runId, by],
    );
    if (rows[0]) await syncDeployment(tx, toRun(rows[0]));
    const run = await getRun(tx, runId);
    return run && isActiveRunStatus(run.status) ? run : undefined;
  });
}

/** Sets an active run's phase; a run that has ended keeps none. */
export async function markRunPhase(db: Queryable, runId: string, phase: RunPhase): Promise<void> {
  await db.query(`UPDATE runs SET phase = $2 WHERE id = $1 AND status IN ('running', 'cancelling') AND started_at IS NOT NULL`, [runId, phase]);
}

export async function setRunPhase(db: Queryable, runId: string, phase: RunPhase): Promise<Run | undefined> {
  await markRunPhase(db, runId, phase);
  return getRun(db, runId);
}

/**
 * The outputs a successful `deploy` should have written, as its template type declares them, that it did
 * not: each becomes a warning on the run (it still succeeded: what it deployed is there).
 */
async function missingDeclaredOutputs(tx: Queryable, runId: string, outcome: RunOutcome): Promise<string[]> {
  if (outcome.status !== 'succeeded') return [];
  const { rows } = await tx.query<{ outputs: { name: string }[] }>(
    `SELECT ttv.outputs FROM runs r
       JOIN deployments d ON d.id = r.deployment_id
       JOIN template_versions tv ON tv.template_name = d.template_name AND tv.version = d.template_version
       JOIN template_type_versions ttv ON ttv.type_name = tv.type_name AND ttv.version = tv.type_version
      WHERE r.id = $1 AND r.action = 'deploy'`,
    [runId],
  );
  const declared = rows[0]?.outputs ?? [];
  return declared
    .filter((o) => !Object.prototype.hasOwnProperty.call(outcome.outputs ?? {}, o.name))
    .map((o) => `the template type declares the output ${o.name}, which the template did not write to /state/outputs.json`);
}

export async function finishRun(db: Db, runId: string, outcome: RunOutcome): Promise<Run | undefined> {
  return inTransaction(db, async (tx) => {
    await lockDeploymentOfRun(tx, runId);
    const warnings = [...(outcome.warnings ?? []), ...(await missingDeclaredOutputs(tx, runId, outcome))];
    const { rows } = await tx.query<RunRow>(
      `UPDATE runs SET status = $2, reason = $3, exit_code = $4, message = $5, outputs = $6, warnings = $7,
              state_version = $8, phase = NULL, finished_at = now()
        WHERE id = $1 AND status = ANY($9::text[]) RETURNING *`,
      [
        runId,
        outcome.status,
        outcome.reason ?? null,
        outcome.exitCode ?? null,
        outcome.message ?? null,
        outcome.outputs ? JSON.stringify(outcome.outputs) : null,
        JSON.stringify(warnings),
        outcome.stateVersion ?? null,
        ACTIVE_RUN_STATUSES,
      ],
    );
    const finished = rows[0] && toRun(rows[0]);
    if (finished) {
      await syncDeployment(tx, finished);
      if (finished.status === 'succeeded' && finished.outputs) {
        await tx.query('UPDATE deployments SET outputs = $2 WHERE id = $1 AND last_run_id = $3', [
          finished.deploymentId,
          JSON.stringify(finished.outputs),
          finished.id,
        ]);
      }
    }
    return getRun(tx, runId);
  });
}

/** Which of these runs are active (pending, running, cancelling); a run the database does not know is not. */
export async function activeRunIds(db: Queryable, runIds: readonly string[]): Promise<Set<string>> {
  const { rows } = await db.query<{ id: string }>('SELECT id FROM runs WHERE id = ANY($1::text[]) AND status = ANY($2::text[])', [runIds, ACTIVE_RUN_STATUSES]);
  return new Set(rows.map((r) => r.id));
}
