import { randomBytes } from 'node:crypto';
import { sha256 } from '../crypto.js';
import { ACTIVE_RUN_STATUSES } from '../domain.js';
import { AppError, ErrorCode } from '../errors.js';
import { PgCode, pgErrorCode, inTransaction, type Db, type Queryable } from './pool.js';

export type NodeStatus = 'pending' | 'active' | 'revoked';

export interface Node {
  id: string;
  description: string;
  labels: Record<string, string>;
  status: NodeStatus;
  /** base64 SPKI DER of the node's X25519 key: run secrets are sealed to this key only. */
  sealingPublicKey: string | null;
  createdBy: string;
  createdAt: string;
  enrolledAt: string | null;
  revokedAt: string | null;
  revokedBy: string | null;
  certificateNotAfter: string | null;
  lastSeenAt: string | null;
  version: string | null;
  capacity: number | null;
}

interface NodeRow {
  id: string;
  description: string;
  labels: Record<string, string>;
  status: NodeStatus;
  sealing_public_key: string | null;
  created_by: string;
  created_at: Date;
  enrolled_at: Date | null;
  revoked_at: Date | null;
  revoked_by: string | null;
  certificate_not_after: Date | null;
  last_seen_at: Date | null;
  version: string | null;
  capacity: number | null;
}

const iso = (d: Date | null) => d?.toISOString() ?? null;

const toNode = (r: NodeRow): Node => ({
  id: r.id,
  description: r.description,
  labels: r.labels,
  status: r.status,
  sealingPublicKey: r.sealing_public_key,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  enrolledAt: iso(r.enrolled_at),
  revokedAt: iso(r.revoked_at),
  revokedBy: r.revoked_by,
  certificateNotAfter: iso(r.certificate_not_after),
  lastSeenAt: iso(r.last_seen_at),
  version: r.version,
  capacity: r.capacity,
});

/** `gge_<secret>`: the prefix lets secret scanners find a leaked enrolment token. */
const ENROLMENT_TOKEN = /^gge_[A-Za-z0-9_-]{43}$/;

export async function createNode(
  db: Db,
  n: { id: string; description: string; labels: Record<string, string>; createdBy: string; enrolmentSeconds: number },
): Promise<{ node: Node; token: string; expiresAt: string }> {
  const token = `gge_${randomBytes(32).toString('base64url')}`;
  try {
    return await inTransaction(db, async (client) => {
      const { rows } = await client.query<NodeRow>(
        `INSERT INTO nodes (id, description, labels, created_by) VALUES ($1, $2, $3, $4) RETURNING *`,
        [n.id, n.description, n.labels, n.createdBy],
      );
      const enrolment = await client.query<{ expires_at: Date }>(
        `INSERT INTO node_enrolments (token_sha256, node_id, created_by, expires_at) VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at`,
        [sha256(token), n.id, n.createdBy, n.enrolmentSeconds],
      );
      return { node: toNode(rows[0]!), token, expiresAt: enrolment.rows[0]!.expires_at.toISOString() };
    });
  } catch (err) {
    if (pgErrorCode(err) === PgCode.UniqueViolation) throw new AppError(ErrorCode.NodeExists, `a node named '${n.id}' exists already`);
    throw err;
  }
}

/**
 * Spends an enrolment token: valid, unexpired and unused, for a node that is still pending. Pins the node's
 * sealing key and marks it active, in one transaction: a token works once even when two calls race.
 */
export async function enrolNode(db: Db, token: string, sealingPublicKey: string, certificateNotAfter: Date): Promise<Node> {
  if (!ENROLMENT_TOKEN.test(token)) throw new AppError(ErrorCode.EnrolmentRefused, 'the enrolment token is not valid');
  return inTransaction(db, async (client) => {
    const { rows } = await client.query<{ node_id: string; expired: boolean; used: boolean }>(
      `SELECT node_id, expires_at <= now() AS expired, used_at IS NOT NULL AS used FROM node_enrolments WHERE token_sha256 = $1 FOR UPDATE`,
      [sha256(token)],
    );
    const enrolment = rows[0];
    // One answer for all three: an attacker learns nothing about which tokens exist.
    if (!enrolment || enrolment.expired || enrolment.used) {
      throw new AppError(ErrorCode.EnrolmentRefused, 'the enrolment token is not valid: unknown, expired, or used already (an admin can issue a new one)');
    }
    await client.query(`UPDATE node_enrolments SET used_at = now() WHERE token_sha256 = $1`, [sha256(token)]);
    const updated = await client.query<NodeRow>(
      `UPDATE nodes SET status = 'active', sealing_public_key = $2, enrolled_at = now(), certificate_not_after = $3
        WHERE id = $1 AND status = 'pending' RETURNING *`,
      [enrolment.node_id, sealingPublicKey, certificateNotAfter],
    );
    if (!updated.rows[0]) throw new AppError(ErrorCode.EnrolmentRefused, 'the node this token was issued for is enrolled already or revoked');
    return toNode(updated.rows[0]);
  });
}

/** A new token for a node that has not enrolled yet (the first one expired or was lost); earlier ones stop working. */
export async function reissueEnrolment(db: Db, nodeId: string, by: string, seconds: number): Promise<{ token: string; expiresAt: string }> {
  const token = `gge_${randomBytes(32).toString('base64url')}`;
  return inTransaction(db, async (client) => {
    const node = await client.query<{ status: NodeStatus }>(`SELECT status FROM nodes WHERE id = $1 FOR UPDATE`, [nodeId]);
    if (!node.rows[0]) throw new AppError(ErrorCode.NodeNotFound, `node '${nodeId}' not found`, { id: nodeId });
    if (node.rows[0].status !== 'pending') throw new AppError(ErrorCode.NodeNotPending, `node '${nodeId}' is ${node.rows[0].status}: only a node that has not enrolled gets a token`);
    await client.query(`UPDATE node_enrolments SET used_at = coalesce(used_at, now()) WHERE node_id = $1`, [nodeId]);
    const { rows } = await client.query<{ expires_at: Date }>(
      `INSERT INTO node_enrolments (token_sha256, node_id, created_by, expires_at) VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at`,
      [sha256(token), nodeId, by, seconds],
    );
    return { token, expiresAt: rows[0]!.expires_at.toISOString() };
  });
}

/**
 * The built-in node is enrolled by the process that hosts it, at each start, with a certificate it just
 * made: the same record a remote node gets, without a token (nothing crosses a network). A revoked built-in
 * node stays revoked: false then.
 */
export async function enrolBuiltInNode(db: Queryable, nodeId: string, description: string, sealingPublicKey: string, certificateNotAfter: Date): Promise<boolean> {
  const { rows } = await db.query(
    `INSERT INTO nodes (id, description, status, sealing_public_key, enrolled_at, certificate_not_after)
     VALUES ($1, $2, 'active', $3, now(), $4)
     ON CONFLICT (id) DO UPDATE SET status = 'active', sealing_public_key = excluded.sealing_public_key,
       enrolled_at = coalesce(nodes.enrolled_at, now()), certificate_not_after = excluded.certificate_not_after
     WHERE nodes.status <> 'revoked'
     RETURNING id`,
    [nodeId, description, sealingPublicKey, certificateNotAfter],
  );
  return rows.length > 0;
}

export async function getNode(db: Queryable, id: string): Promise<Node | undefined> {
  const { rows } = await db.query<NodeRow>(`SELECT * FROM nodes WHERE id = $1`, [id]);
  return rows[0] && toNode(rows[0]);
}

export async function listNodes(db: Queryable): Promise<(Node & { activeRuns: string[] })[]> {
  const { rows } = await db.query<NodeRow & { active_runs: string[] }>(
    `SELECT n.*, coalesce(array_agg(r.id ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL), '{}') AS active_runs
       FROM nodes n
       LEFT JOIN deployments d ON d.target_kind = 'node' AND d.target_node = n.id
       LEFT JOIN runs r ON r.deployment_id = d.id AND r.status = ANY($1)
      GROUP BY n.id ORDER BY n.id`,
    [ACTIVE_RUN_STATUSES],
  );
  return rows.map((r) => ({ ...toNode(r), activeRuns: r.active_runs }));
}

export async function recordCertificate(db: Queryable, nodeId: string, notAfter: Date): Promise<void> {
  await db.query(`UPDATE nodes SET certificate_not_after = $2 WHERE id = $1`, [nodeId, notAfter]);
}

export async function recordHeartbeat(db: Queryable, nodeId: string, h: { version: string; capacity: number }): Promise<void> {
  await db.query(`UPDATE nodes SET last_seen_at = now(), version = $2, capacity = $3 WHERE id = $1`, [nodeId, h.version, h.capacity]);
}

/** The gateway asks on every call; a node seen calling is online, so this is also its last-seen time (at most every 5 s). */
export async function nodeStatusForGateway(db: Queryable, nodeId: string): Promise<NodeStatus | undefined> {
  const { rows } = await db.query<{ status: NodeStatus }>(
    `WITH seen AS (
       UPDATE nodes SET last_seen_at = now()
        WHERE id = $1 AND status = 'active' AND (last_seen_at IS NULL OR last_seen_at < now() - interval '5 seconds')
     )
     SELECT status FROM nodes WHERE id = $1`,
    [nodeId],
  );
  return rows[0]?.status;
}

/** Revokes a node; returns the node and the runs it had active (their workflows end them as node-revoked). */
export async function revokeNode(db: Queryable, nodeId: string, by: string): Promise<{ node: Node; activeRuns: { runId: string; deploymentId: string }[] } | undefined> {
  const { rows } = await db.query<NodeRow>(
    `UPDATE nodes SET status = 'revoked', revoked_at = coalesce(revoked_at, now()), revoked_by = coalesce(revoked_by, $2) WHERE id = $1 RETURNING *`,
    [nodeId, by],
  );
  if (!rows[0]) return undefined;
  const runs = await db.query<{ id: string; deployment_id: string }>(
    `SELECT r.id, r.deployment_id FROM runs r JOIN deployments d ON d.id = r.deployment_id
      WHERE d.target_kind = 'node' AND d.target_node = $1 AND r.status = ANY($2)`,
    [nodeId, ACTIVE_RUN_STATUSES],
  );
  return { node: toNode(rows[0]), activeRuns: runs.rows.map((r) => ({ runId: r.id, deploymentId: r.deployment_id })) };
}

/** A node's active runs (of those given, when given), in one query. */
export async function activeRunsOfNode(db: Queryable, nodeId: string, among?: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT r.id FROM runs r JOIN deployments d ON d.id = r.deployment_id
      WHERE d.target_kind = 'node' AND d.target_node = $1 AND r.status = ANY($2) AND ($3::text[] IS NULL OR r.id = ANY($3))
      ORDER BY r.id`,
    [nodeId, ACTIVE_RUN_STATUSES, among ?? null],
  );
  return rows.map((r) => r.id);
}

/** Whether a run belongs to a node (its deployment targets that node) and is still active. */
export async function runOfNode(db: Queryable, runId: string, nodeId: string): Promise<boolean> {
  const { rows } = await db.query(
    `SELECT 1 FROM runs r JOIN deployments d ON d.id = r.deployment_id
      WHERE r.id = $1 AND d.target_kind = 'node' AND d.target_node = $2 AND r.status = ANY($3)`,
    [runId, nodeId, ACTIVE_RUN_STATUSES],
  );
  return rows.length > 0;
}

/** The node a run executes on, or undefined for a cluster run (or an unknown run). */
export async function nodeOfRun(db: Queryable, runId: string): Promise<string | undefined> {
  const { rows } = await db.query<{ target_node: string | null }>(
    `SELECT d.target_node FROM runs r JOIN deployments d ON d.id = r.deployment_id WHERE r.id = $1 AND d.target_kind = 'node'`,
    [runId],
  );
  return rows[0]?.target_node ?? undefined;
}
