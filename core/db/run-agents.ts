import { timingSafeEqual } from 'node:crypto';
import { ACTIVE_RUN_STATUSES, isUnreadableStateReason, type UnreadableStateReason } from '../domain.js';
import { sha256 } from '../crypto.js';
import type { Queryable } from './pool.js';

/** What the pod-runner reports once the template has ended and /state is archived. */
export interface AgentResult {
  exitCode: number;
  signal?: string | undefined;
  /** The runner was told to stop (the pod was deleted: cancel or timeout). */
  stopped: boolean;
  outputs?: Record<string, unknown> | undefined;
  warnings: string[];
  stateVersion?: number | undefined;
}

export interface RunAgentGrant {
  runId: string;
  deploymentId: string;
  restoreVersion: number | undefined;
}

/**
 * Records the credential of a run's agent. Idempotent: the adapter derives the hash from the credential it
 * keeps beside the Job, so a retried attempt writes the same row again.
 */
export async function grantRunAgent(
  db: Queryable,
  g: RunAgentGrant & { credential: string },
): Promise<void> {
  await grantRunAgentDigest(db, { ...g, credentialSha256: sha256(g.credential) });
}

/** The same, from the credential's sha256 only: a node's relay keeps the credential and sends its digest. */
export async function grantRunAgentDigest(db: Queryable, g: RunAgentGrant & { credentialSha256: Buffer }): Promise<void> {
  await db.query(
    `INSERT INTO run_agents (run_id, deployment_id, credential_sha256, restore_version) VALUES ($1, $2, $3, $4)
     ON CONFLICT (run_id) DO UPDATE SET credential_sha256 = excluded.credential_sha256, restore_version = excluded.restore_version`,
    [g.runId, g.deploymentId, g.credentialSha256, g.restoreVersion ?? null],
  );
}

/**
 * The grant for a run's credential, only while the run is active: a credential dies with its run. With
 * `ended`, also for a run that has ended: `ended` then says how (only its node's late state is taken so).
 */
export async function verifyRunAgent(
  db: Queryable,
  runId: string,
  credential: string,
  opts: { allowEnded?: boolean } = {},
): Promise<(RunAgentGrant & { ended?: { status: string; reason: string | null } }) | undefined> {
  const { rows } = await db.query<{ deployment_id: string; credential_sha256: Buffer; restore_version: number | null; status: string; reason: string | null }>(
    `SELECT a.deployment_id, a.credential_sha256, a.restore_version, r.status, r.reason
       FROM run_agents a JOIN runs r ON r.id = a.run_id
      WHERE a.run_id = $1`,
    [runId],
  );
  const row = rows[0];
  if (!row) return undefined;
  const active = (ACTIVE_RUN_STATUSES as readonly string[]).includes(row.status);
  if (!active && !opts.allowEnded) return undefined;
  const presented = sha256(credential);
  if (presented.length !== row.credential_sha256.length || !timingSafeEqual(presented, row.credential_sha256)) return undefined;
  return { runId, deploymentId: row.deployment_id, restoreVersion: row.restore_version ?? undefined, ...(active ? {} : { ended: { status: row.status, reason: row.reason } }) };
}

/** The runner has called in: a Job that vanishes after this must not be made again (the template may have run). */
export async function markRunAgentStarted(db: Queryable, runId: string): Promise<void> {
  await db.query(`UPDATE run_agents SET started_at = coalesce(started_at, now()) WHERE run_id = $1`, [runId]);
}

export async function runAgentStarted(db: Queryable, runId: string): Promise<boolean> {
  const { rows } = await db.query<{ started: boolean }>(`SELECT started_at IS NOT NULL AS started FROM run_agents WHERE run_id = $1`, [runId]);
  return rows[0]?.started ?? false;
}

/** What the agent API refused about a run's state; the first such failure is kept. */
export interface AgentStateFailure {
  reason: UnreadableStateReason | 'state-too-large';
  message: string;
}

export async function recordAgentStateFailure(db: Queryable, runId: string, failure: { reason: string; message: string }): Promise<void> {
  if (!isUnreadableStateReason(failure.reason) && failure.reason !== 'state-too-large') return;
  await db.query(`UPDATE run_agents SET state_failure = $2 WHERE run_id = $1 AND state_failure IS NULL`, [
    runId,
    { reason: failure.reason, message: failure.message },
  ]);
}

export async function getAgentStateFailure(db: Queryable, runId: string): Promise<AgentStateFailure | undefined> {
  const { rows } = await db.query<{ state_failure: AgentStateFailure | null }>(`SELECT state_failure FROM run_agents WHERE run_id = $1`, [runId]);
  return rows[0]?.state_failure ?? undefined;
}

/** The first report wins: a runner retrying after a lost answer cannot change what was recorded. */
export async function recordAgentResult(db: Queryable, runId: string, result: AgentResult): Promise<void> {
  await db.query(`UPDATE run_agents SET result = $2, result_at = now() WHERE run_id = $1 AND result IS NULL`, [runId, result]);
}

/** The state version this run archived (complete), if any: the only one its result may name. */
export async function archivedStateVersion(db: Queryable, runId: string): Promise<number | undefined> {
  const { rows } = await db.query<{ version: number }>(`SELECT version FROM state_versions WHERE run_id = $1 AND status = 'complete'`, [runId]);
  return rows[0]?.version;
}

export async function getAgentResult(db: Queryable, runId: string): Promise<AgentResult | undefined> {
  const { rows } = await db.query<{ result: AgentResult | null }>(`SELECT result FROM run_agents WHERE run_id = $1`, [runId]);
  return rows[0]?.result ?? undefined;
}

/** The ad-hoc template files of a run's template version (deployments cannot change version while a run is active). */
export async function runTemplateSource(db: Queryable, runId: string): Promise<string | undefined> {
  const { rows } = await db.query<{ source_id: string | null }>(
    `SELECT tv.source_id FROM runs r JOIN deployments d ON d.id = r.deployment_id
       JOIN template_versions tv ON tv.template_name = d.template_name AND tv.version = d.template_version
      WHERE r.id = $1 AND tv.adhoc`,
    [runId],
  );
  return rows[0]?.source_id ?? undefined;
}
