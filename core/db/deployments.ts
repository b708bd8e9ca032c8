import { ACTIVE_RUN_STATUSES, type DeploymentStatus, type RunLimits, type Target } from '../domain.js';
import { limitsOf } from './templates.js';
import { inTransaction, type Db, type Queryable } from './pool.js';

export interface Deployment {
  id: string;
  name: string;
  template: { name: string; version: number };
  /** Non-sensitive values only. */
  parameters: Record<string, unknown>;
  /** Names of sensitive parameters that have a value (the values are encrypted apart). */
  sensitiveParameters: string[];
  target: Target;
  status: DeploymentStatus;
  lastRunId: string | null;
  outputs: Record<string, unknown>;
  /** The state version the next run starts from. */
  currentStateVersion: number | null;
  limits: RunLimits;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

interface DeploymentRow {
  id: string;
  seq: string;
  name: string;
  template_name: string;
  template_version: number;
  parameters: Record<string, unknown>;
  secret_parameter_names: string[];
  target_kind: 'cluster' | 'node';
  target_node: string | null;
  status: DeploymentStatus;
  last_run_id: string | null;
  outputs: Record<string, unknown>;
  current_state_version: number | null;
  timeout_seconds: number | null;
  cpus: string | null;
  memory_mb: number | null;
  state_max_mb: number | null;
  created_by: string;
  created_at: Date;
  updated_at: Date;
}

const toDeployment = (r: DeploymentRow): Deployment => ({
  id: r.id,
  name: r.name,
  template: { name: r.template_name, version: r.template_version },
  parameters: r.parameters,
  sensitiveParameters: r.secret_parameter_names,
  target: r.target_kind === 'cluster' ? { kind: 'cluster' } : { kind: 'node', node: r.target_node! },
  status: r.status,
  lastRunId: r.last_run_id,
  outputs: r.outputs,
  currentStateVersion: r.current_state_version,
  limits: limitsOf(r),
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

export async function insertDeployment(
  db: Queryable,
  d: Pick<Deployment, 'id' | 'name' | 'template' | 'parameters' | 'sensitiveParameters' | 'target' | 'createdBy' | 'limits'> & {
    /** The sensitive values, already encrypted (core/crypto.ts SecretBox). */
    sealedSecrets: Buffer | null;
  },
): Promise<Deployment> {
  const { rows } = await db.query<DeploymentRow>(
    `INSERT INTO deployments (id, name, template_name, template_version, parameters, target_kind, target_node, created_by,
                              secret_parameters, secret_parameter_names, timeout_seconds, cpus, memory_mb, state_max_mb)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING *`,
    [
      d.id,
      d.name,
      d.template.name,
      d.template.version,
      JSON.stringify(d.parameters),
      d.target.kind,
      d.target.kind === 'node' ? d.target.node : null,
      d.createdBy,
      d.sealedSecrets,
      d.sensitiveParameters,
      d.limits.timeoutSeconds ?? null,
      d.limits.cpus ?? null,
      d.limits.memoryMb ?? null,
      d.limits.stateMaxMb ?? null,
    ],
  );
  return toDeployment(rows[0]!);
}

/** The encrypted sensitive values of a deployment, for the run that needs them. */
export async function getSealedSecrets(db: Queryable, id: string): Promise<Buffer | null> {
  const { rows } = await db.query<{ secret_parameters: Buffer | null }>('SELECT secret_parameters FROM deployments WHERE id = $1', [id]);
  return rows[0]?.secret_parameters ?? null;
}

export async function getDeployment(db: Queryable, id: string): Promise<Deployment | undefined> {
  const { rows } = await db.query<DeploymentRow>('SELECT * FROM deployments WHERE id = $1', [id]);
  return rows[0] && toDeployment(rows[0]);
}

export interface DeploymentFilter {
  status?: DeploymentStatus | undefined;
  template?: string | undefined;
  /** `cluster` or `node:<id>` */
  target?: string | undefined;
  limit: number;
  /** The sequence number after which to continue (decoded from the API's cursor). */
  afterSeq?: number | undefined;
}

/** Oldest first, stable across pages: ordered by creation sequence, continued after `afterSeq`. */
export async function listDeployments(
  db: Queryable,
  f: DeploymentFilter,
): Promise<{ items: Deployment[]; nextSeq: number | null }> {
  const where: string[] = [];
  const args: unknown[] = [];
  const arg = (v: unknown) => {
    args.push(v);
    return `$${args.length}`;
  };
  if (f.status) where.push(`status = ${arg(f.status)}`);
  if (f.template) where.push(`template_name = ${arg(f.template)}`);
  if (f.target === 'cluster') where.push(`target_kind = 'cluster'`);
  else if (f.target?.startsWith('node:')) where.push(`target_node = ${arg(f.target.slice('node:'.length))}`);
  if (f.afterSeq !== undefined) where.push(`seq > ${arg(f.afterSeq)}`);
  const { rows } = await db.query<DeploymentRow>(
    `SELECT * FROM deployments ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY seq LIMIT ${arg(f.limit + 1)}`,
    args,
  );
  const page = rows.slice(0, f.limit);
  const last = page[page.length - 1];
  return { items: page.map(toDeployment), nextSeq: rows.length > f.limit && last ? Number(last.seq) : null };
}

/**
 * Deletes a deployment with its runs, logs, state versions and secrets (all by cascade).
 * Refused while it has an active run; the row lock keeps a run from starting meanwhile.
 */
export async function purgeDeployment(db: Db, id: string): Promise<'purged' | 'run-active' | 'not-found'> {
  return inTransaction(db, async (tx) => {
    const locked = await tx.query('SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE', [id]);
    if (locked.rowCount === 0) return 'not-found';
    const active = await tx.query(`SELECT 1 FROM runs WHERE deployment_id = $1 AND status = ANY($2::text[])`, [id, ACTIVE_RUN_STATUSES]);
    if (active.rowCount) return 'run-active';
    // The last-run reference is deferred; clear it so the cascade to runs is unconditional.
    await tx.query('UPDATE deployments SET last_run_id = NULL WHERE id = $1', [id]);
    await tx.query('DELETE FROM deployments WHERE id = $1', [id]);
    return 'purged';
  });
}

/**
 * Moves a deployment to another version of its template with parameters already validated against it.
 * Refused while a run is active: a run keeps the version it started with.
 */
export async function upgradeDeployment(
  db: Db,
  id: string,
  u: { version: number; parameters: Record<string, unknown>; sensitiveParameters: string[]; sealedSecrets: Buffer | null },
): Promise<Deployment | 'run-active' | 'not-found'> {
  return inTransaction(db, async (tx) => {
    const locked = await tx.query('SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE', [id]);
    if (locked.rowCount === 0) return 'not-found';
    const active = await tx.query(`SELECT 1 FROM runs WHERE deployment_id = $1 AND status = ANY($2::text[])`, [id, ACTIVE_RUN_STATUSES]);
    if (active.rowCount) return 'run-active';
    const { rows } = await tx.query<DeploymentRow>(
      `UPDATE deployments SET template_version = $2, parameters = $3, secret_parameter_names = $4, secret_parameters = $5, updated_at = now()
        WHERE id = $1 RETURNING *`,
      [id, u.version, JSON.stringify(u.parameters), u.sensitiveParameters, u.sealedSecrets],
    );
    return toDeployment(rows[0]!);
  });
}
