import type { ParameterPlan } from '../parameter-plan.js';
import { newId } from '../ids.js';
import type { Queryable } from './pool.js';

export const BUILD_STATUSES = ['pending', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type BuildStatus = (typeof BUILD_STATUSES)[number];

/** What a build is asked to build from: an upload stored before, or a git repository fetched by the build. */
export type BuildSource = { kind: 'upload'; sourceId: string } | { kind: 'git'; url: string; ref: string; subdir?: string | undefined };

export interface Build {
  id: string;
  templateName: string;
  type: { name: string; version: number };
  source: BuildSource;
  /** The stored source it built (for git: once fetched). */
  sourceId: string | null;
  parameters: ParameterPlan;
  status: BuildStatus;
  /** Why it failed, as a stable word: source-rejected, build-failed, push-failed, timeout, infrastructure. */
  reason: string | null;
  message: string | null;
  /**
   * The template version it makes, reserved when the build is requested so the image's labels can carry it;
   * a build that fails or is cancelled leaves its number unused.
   */
  version: number;
  /** The pushed image, by digest. */
  image: string | null;
  requestedBy: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

interface BuildRow {
  id: string;
  template_name: string;
  type_name: string;
  type_version: number;
  source: BuildSource;
  source_id: string | null;
  parameters: ParameterPlan;
  status: BuildStatus;
  reason: string | null;
  message: string | null;
  version: number;
  image: string | null;
  requested_by: string;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

const toBuild = (r: BuildRow): Build => ({
  id: r.id,
  templateName: r.template_name,
  type: { name: r.type_name, version: r.type_version },
  source: r.source,
  sourceId: r.source_id,
  parameters: r.parameters,
  status: r.status,
  reason: r.reason,
  message: r.message,
  version: r.version,
  image: r.image,
  requestedBy: r.requested_by,
  createdAt: r.created_at.toISOString(),
  startedAt: r.started_at?.toISOString() ?? null,
  finishedAt: r.finished_at?.toISOString() ?? null,
});

export async function insertBuild(
  db: Queryable,
  b: { templateName: string; type: { name: string; version: number }; source: BuildSource; parameters: ParameterPlan; requestedBy: string },
): Promise<Build> {
  // The template's row lock serialises number reservations with other builds and with added versions.
  await db.query('SELECT 1 FROM templates WHERE name = $1 FOR UPDATE', [b.templateName]);
  const { rows } = await db.query<BuildRow>(
    `INSERT INTO template_builds (id, template_name, type_name, type_version, source, source_id, parameters, requested_by, version)
     VALUES ($1, $2::text, $3, $4, $5, $6, $7, $8, ${NEXT_VERSION_SQL}) RETURNING *`,
    [
      newId('bld'),
      b.templateName,
      b.type.name,
      b.type.version,
      JSON.stringify(b.source),
      b.source.kind === 'upload' ? b.source.sourceId : null,
      JSON.stringify(b.parameters),
      b.requestedBy,
    ],
  );
  return toBuild(rows[0]!);
}

/** The next template version number: after every version made and every number a build reserved. */
const NEXT_VERSION_SQL = `greatest(
  (SELECT coalesce(max(version), 0) FROM template_versions WHERE template_name = $2::text),
  (SELECT coalesce(max(version), 0) FROM template_builds WHERE template_name = $2::text)) + 1`;

export async function getBuild(db: Queryable, id: string): Promise<Build | undefined> {
  const { rows } = await db.query<BuildRow>('SELECT * FROM template_builds WHERE id = $1', [id]);
  return rows[0] && toBuild(rows[0]);
}

export async function listBuilds(db: Queryable, templateName: string): Promise<Build[]> {
  const { rows } = await db.query<BuildRow>('SELECT * FROM template_builds WHERE template_name = $1 ORDER BY created_at DESC, id LIMIT 100', [templateName]);
  return rows.map(toBuild);
}

/** pending → running; a build already ended stays as it is (a retried activity, a late start). */
export async function markBuildRunning(db: Queryable, id: string): Promise<Build | undefined> {
  const { rows } = await db.query<BuildRow>(
    `UPDATE template_builds SET status = 'running', started_at = coalesce(started_at, now()) WHERE id = $1 AND status IN ('pending', 'running') RETURNING *`,
    [id],
  );
  return rows[0] ? toBuild(rows[0]) : getBuild(db, id);
}

export async function setBuildSource(db: Queryable, id: string, sourceId: string): Promise<void> {
  await db.query('UPDATE template_builds SET source_id = $2 WHERE id = $1', [id, sourceId]);
}

/** Idempotent: only an active build ends, and only once. */
export async function endBuild(
  db: Queryable,
  id: string,
  end: { status: 'succeeded'; image: string } | { status: 'failed' | 'cancelled'; reason?: string; message: string },
): Promise<Build | undefined> {
  await db.query(
    `UPDATE template_builds SET status = $2, reason = $3, message = $4, image = $5, finished_at = now()
      WHERE id = $1 AND status IN ('pending', 'running')`,
    [
      id,
      end.status,
      end.status === 'failed' ? (end.reason ?? 'infrastructure') : null,
      end.status === 'succeeded' ? null : end.message,
      end.status === 'succeeded' ? end.image : null,
    ],
  );
  return getBuild(db, id);
}

export async function appendBuildLog(db: Queryable, id: string, lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  await db.query('INSERT INTO template_build_logs (build_id, line) SELECT $1, unnest($2::text[])', [id, lines]);
}

export async function readBuildLog(db: Queryable, id: string, afterSeq = 0, limit = 1000): Promise<{ seq: number; at: string; line: string }[]> {
  const { rows } = await db.query<{ seq: string; at: Date; line: string }>(
    'SELECT seq, at, line FROM template_build_logs WHERE build_id = $1 AND seq > $2 ORDER BY seq LIMIT $3',
    [id, afterSeq, limit],
  );
  return rows.map((r) => ({ seq: Number(r.seq), at: r.at.toISOString(), line: r.line }));
}
