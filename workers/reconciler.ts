import type { Client } from '@temporalio/client';
import { getDeployment } from '../core/db/deployments.js';
import type { Db } from '../core/db/pool.js';
import { getRun, previousRunSummary } from '../core/db/runs.js';
import { ACTIVE_RUN_STATUSES } from '../core/domain.js';
import { signalRun } from '../workflows/client.js';
import { deploymentWorkflowId, statusQuery } from '../workflows/messages.js';

/** Which runs a reconciler looks at; all of them unless narrowed. */
export interface ReconcileScope {
  /** Only the runs of these deployments (an operator settling some by hand; test files sharing one database). */
  deploymentIds?: readonly string[] | undefined;
}

const isActive = (status: string): boolean => (ACTIVE_RUN_STATUSES as readonly string[]).includes(status);

/**
 * Settles runs that Postgres says are active but no workflow is executing: the deployment's workflow was
 * terminated or reset, or a hand-over to it was lost. Each is handed to the deployment's workflow again
 * (a new execution if none runs), which resumes it: the container is adopted if it exists, reported as
 * vanished if it was started and is gone, and started if it never was. Returns the runs handed over.
 */
export async function reconcileRuns(
  deps: { db: Db; temporal: Client; taskQueue: string },
  olderThanSeconds: number,
  scope: ReconcileScope = {},
): Promise<string[]> {
  const { rows } = await deps.db.query<{ id: string; deployment_id: string }>(
    `SELECT id, deployment_id FROM runs WHERE status = ANY($2::text[])
        AND coalesce(started_at, created_at) < now() - make_interval(secs => $1)
        AND ($3::text[] IS NULL OR deployment_id = ANY($3::text[]))
      ORDER BY created_at`,
    [olderThanSeconds, ACTIVE_RUN_STATUSES, scope.deploymentIds ?? null],
  );
  const handed: string[] = [];
  for (const row of rows) {
    const handle = deps.temporal.workflow.getHandle(deploymentWorkflowId(row.deployment_id));
    const running = await handle.describe().then(
      (d) => d.status.name === 'RUNNING',
      () => false,
    );
    if (running) {
      const status = await handle.query(statusQuery).catch(() => undefined);
      if (!status || status.activeRun?.id === row.id) continue; // in progress (or not answering yet: next round)
    }
    const [deployment, run] = await Promise.all([getDeployment(deps.db, row.deployment_id), getRun(deps.db, row.id)]);
    if (!deployment || !run || !isActive(run.status)) continue;
    await signalRun(deps, deployment, run, await previousRunSummary(deps.db, deployment, run));
    handed.push(run.id);
  }
  return handed;
}

/**
 * Runs reconcileRuns every `everyMs` until stopped (a round still going when the next is due is not doubled);
 * a failed round is reported and retried next time. `onHanded` hears of each round that handed runs over.
 */
export function startReconciler(
  deps: { db: Db; temporal: Client; taskQueue: string },
  opts: {
    everyMs: number;
    olderThanSeconds: number;
    onError: (err: unknown) => void;
    onHanded?: (runIds: string[]) => void;
    scope?: ReconcileScope;
  },
): { stop(): Promise<void> } {
  let current: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (current) return;
    current = reconcileRuns(deps, opts.olderThanSeconds, opts.scope)
      .then((handed) => {
        if (handed.length > 0) opts.onHanded?.(handed);
      }, opts.onError)
      .finally(() => {
        current = undefined;
      });
  }, opts.everyMs);
  return {
    async stop() {
      clearInterval(timer);
      await current;
    },
  };
}
