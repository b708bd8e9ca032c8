import type { ParameterDeclaration, RunLimits } from '../domain.js';

/** Shared by template versions and deployments: unset columns are left out. */
export function limitsOf(r: { timeout_seconds: number | null; cpus: string | null; memory_mb: number | null }): RunLimits {
  return {
    ...(r.timeout_seconds !== null ? { timeoutSeconds: r.timeout_seconds } : {}),
    ...(r.cpus !== null ? { cpus: Number(r.cpus) } : {}),
    ...(r.memory_mb !== null ? { memoryMb: r.memory_mb } : {}),
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

export interface TemplateVersion {
  templateName: string;
  version: number;
  image: string;
  parameters: ParameterDeclaration[];
  actions: string[];
  tfVars: boolean;
  limits: RunLimits;
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
  v: Omit<TemplateVersion, 'version' | 'createdAt'>,
): Promise<TemplateVersion> {
  return inTransaction(db, async (tx) => {
    // Serialises concurrent additions to one template so they get distinct numbers.
    const locked = await tx.query('SELECT 1 FROM templates WHERE name = $1 FOR UPDATE', [v.templateName]);
    if (locked.rowCount === 0) {
      throw new AppError(ErrorCode.TemplateNotFound, `template '${v.templateName}' does not exist`, {
        name: v.templateName,
      });
    }
    const { rows } = await tx.query<TemplateVersionRow>(
      `INSERT INTO template_versions (template_name, version, image, parameters, actions, tf_vars, created_by, timeout_seconds, cpus, memory_mb)
       VALUES ($1::text, (SELECT coalesce(max(version), 0) + 1 FROM template_versions WHERE template_name = $1::text), $2, $3, $4, $5, $6, $7, $8, $9)
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
      ],
    );
    return toVersion(rows[0]!);
  });
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
