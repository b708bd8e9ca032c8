import type { ParameterDeclaration, RunLimits } from '../domain.js';

/** Shared by template versions and deployments: unset columns are left out. */
export function limitsOf(r: { timeout_seconds: number | null; cpus: string | null; memory_mb: number | null; state_max_mb: number | null }): RunLimits {
  return {
    ...(r.timeout_seconds !== null ? { timeoutSeconds: r.timeout_seconds } : {}),
    ...(r.cpus !== null ? { cpus: Number(r.cpus) } : {}),
    ...(r.memory_mb !== null ? { memoryMb: r.memory_mb } : {}),
    ...(r.state_max_mb !== null ? { stateMaxMb: r.state_max_mb } : {}),
  };
}
import { AppError, ErrorCode } from '../errors.js';
import { PgCode, inTransaction, pgErrorCode, type Db, type Queryable } from './pool.js';

export interface Template {
  name: string;
  description: string;
  createdBy: string;
  createdAt: string;
  latestVersion: number | null;
}

/** Where a version made from a type came from: an upload, or a git repository at a resolved commit. */
export type TemplateSourceInfo =
  | { kind: 'upload'; sourceId: string; format: 'zip' | 'tgz'; sha256: string }
  | { kind: 'git'; sourceId: string; url: string; ref: string; subdir?: string | undefined; commit: string; sha256: string };

export interface TemplateVersionOrigin {
  type: { name: string; version: number };
  source: TemplateSourceInfo;
  /** The build that made its image; none for an ad-hoc version (its files are mounted at run time). */
  buildId: string | null;
  adhoc: boolean;
  /** Values of the type's parameters the template fixed: every run gets them, deployments cannot set them. */
  fixedParameters: Record<string, unknown>;
}

export interface TemplateVersion {
  templateName: string;
  version: number;
  image: string;
  parameters: ParameterDeclaration[];
  actions: string[];
  tfVars: boolean;
  limits: RunLimits;
  /** Set for versions made from a template type (built or ad-hoc); null for a version naming an image. */
  origin: TemplateVersionOrigin | null;
  createdBy: string;
  createdAt: string;
}

interface TemplateRow {
  name: string;
  description: string;
  created_by: string;
  created_at: Date;
  latest_version: number | null;
}

interface TemplateVersionRow {
  template_name: string;
  version: number;
  image: string;
  parameters: ParameterDeclaration[];
  actions: string[];
  tf_vars: boolean;
  timeout_seconds: number | null;
  cpus: string | null;
  memory_mb: number | null;
  state_max_mb: number | null;
  type_name: string | null;
  type_version: number | null;
  source: TemplateSourceInfo | null;
  build_id: string | null;
  adhoc: boolean;
  fixed_parameters: Record<string, unknown>;
  created_by: string;
  created_at: Date;
}

const toTemplate = (r: TemplateRow): Template => ({
  name: r.name,
  description: r.description,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  latestVersion: r.latest_version,
});

const toVersion = (r: TemplateVersionRow): TemplateVersion => ({
  templateName: r.template_name,
  version: r.version,
  image: r.image,
  parameters: r.parameters,
  actions: r.actions,
  tfVars: r.tf_vars,
  limits: limitsOf(r),
  origin:
    r.type_name && r.type_version && r.source
      ? { type: { name: r.type_name, version: r.type_version }, source: r.source, buildId: r.build_id, adhoc: r.adhoc, fixedParameters: r.fixed_parameters }
      : null,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
});

const SELECT_TEMPLATE = `
  SELECT t.name, t.description, t.created_by, t.created_at,
         (SELECT max(version) FROM template_versions v WHERE v.template_name = t.name) AS latest_version
    FROM templates t`;

export async function createTemplate(
  db: Queryable,
  t: { name: string; description: string; createdBy: string },
): Promise<Template> {
  try {
    await db.query('INSERT INTO templates (name, description, created_by) VALUES ($1, $2, $3)', [
      t.name,
      t.description,
      t.createdBy,
    ]);
  } catch (err) {
    if (pgErrorCode(err) === PgCode.UniqueViolation) {
      throw new AppError(ErrorCode.TemplateExists, `template '${t.name}' already exists`, { name: t.name });
    }
    throw err;
  }
  return (await getTemplate(db, t.name))!;
}

export async function getTemplate(db: Queryable, name: string): Promise<Template | undefined> {
  const { rows } = await db.query<TemplateRow>(`${SELECT_TEMPLATE} WHERE t.name = $1`, [name]);
  return rows[0] && toTemplate(rows[0]);
}

export async function listTemplates(db: Queryable): Promise<Template[]> {
  const { rows } = await db.query<TemplateRow>(`${SELECT_TEMPLATE} ORDER BY t.name`);
  return rows.map(toTemplate);
}

/** Adds the next version; versions are numbered 1, 2, … per template without gaps. */
export async function addTemplateVersion(
  db: Db,
  v: Omit<TemplateVersion, 'version' | 'createdAt' | 'origin'> & { origin?: TemplateVersionOrigin | null },
): Promise<TemplateVersion> {
  return inTransaction(db, (tx) => insertTemplateVersion(tx, v));
}

/** addTemplateVersion inside the caller's transaction (a build records its version and its own end at once). */
export async function insertTemplateVersion(
  tx: Queryable,
  v: Omit<TemplateVersion, 'version' | 'createdAt' | 'origin'> & {
    origin?: TemplateVersionOrigin | null;
    /** The number a build reserved; otherwise the next one. */
    version?: number;
  },
): Promise<TemplateVersion> {
  // Serialises concurrent additions to one template so they get distinct numbers.
  const locked = await tx.query('SELECT 1 FROM templates WHERE name = $1 FOR UPDATE', [v.templateName]);
  if (locked.rowCount === 0) {
    throw new AppError(ErrorCode.TemplateNotFound, `template '${v.templateName}' does not exist`, { name: v.templateName });
  }
  const { rows } = await tx.query<TemplateVersionRow>(
    `INSERT INTO template_versions (template_name, version, image, parameters, actions, tf_vars, created_by, timeout_seconds, cpus, memory_mb,
                                    type_name, type_version, source_id, source, build_id, adhoc, fixed_parameters, state_max_mb)
     VALUES ($1::text, coalesce($17::integer, greatest(
               (SELECT coalesce(max(version), 0) FROM template_versions WHERE template_name = $1::text),
               (SELECT coalesce(max(version), 0) FROM template_builds WHERE template_name = $1::text)) + 1),
             $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $18)
     RETURNING *`,
    [
      v.templateName,
      v.image,
      JSON.stringify(v.parameters),
      v.actions,
      v.tfVars,
      v.createdBy,
      v.limits.timeoutSeconds ?? null,
      v.limits.cpus ?? null,
      v.limits.memoryMb ?? null,
      v.origin?.type.name ?? null,
      v.origin?.type.version ?? null,
      v.origin?.source.sourceId ?? null,
      v.origin ? JSON.stringify(v.origin.source) : null,
      v.origin?.buildId ?? null,
      v.origin?.adhoc ?? false,
      JSON.stringify(v.origin?.fixedParameters ?? {}),
      v.version ?? null,
      v.limits.stateMaxMb ?? null,
    ],
  );
  return toVersion(rows[0]!);
}

export async function getTemplateVersion(
  db: Queryable,
  name: string,
  version: number,
): Promise<TemplateVersion | undefined> {
  const { rows } = await db.query<TemplateVersionRow>(
    'SELECT * FROM template_versions WHERE template_name = $1 AND version = $2',
    [name, version],
  );
  return rows[0] && toVersion(rows[0]);
}

export async function listTemplateVersions(db: Queryable, name: string): Promise<TemplateVersion[]> {
  const { rows } = await db.query<TemplateVersionRow>(
    'SELECT * FROM template_versions WHERE template_name = $1 ORDER BY version',
    [name],
  );
  return rows.map(toVersion);
}
