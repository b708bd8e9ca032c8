import type { ParameterDeclaration } from '../domain.js';
import { AppError, ErrorCode } from '../errors.js';
import { PgCode, inTransaction, pgErrorCode, type Db, type Queryable } from './pool.js';

export interface OutputDeclaration {
  name: string;
  description?: string | undefined;
}

export interface TemplateType {
  name: string;
  description: string;
  createdBy: string;
  createdAt: string;
  latestVersion: number | null;
}

/** What templates made from a type get: its image (the base, or an ad-hoc type's generic runner) and declarations. */
export interface TemplateTypeVersionSpec {
  image: string;
  adhoc: boolean;
  parameters: ParameterDeclaration[];
  outputs: OutputDeclaration[];
  actions: string[];
  tfVars: boolean;
}

export interface TemplateTypeVersion extends TemplateTypeVersionSpec {
  typeName: string;
  version: number;
  /** A template version uses it: it can no longer change. */
  inUse: boolean;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

interface TypeRow {
  name: string;
  description: string;
  created_by: string;
  created_at: Date;
  latest_version: number | null;
}

interface TypeVersionRow {
  type_name: string;
  version: number;
  image: string;
  adhoc: boolean;
  parameters: ParameterDeclaration[];
  outputs: OutputDeclaration[];
  actions: string[];
  tf_vars: boolean;
  in_use: boolean;
  created_by: string;
  created_at: Date;
  updated_at: Date;
}

const toType = (r: TypeRow): TemplateType => ({
  name: r.name,
  description: r.description,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  latestVersion: r.latest_version,
});

const toTypeVersion = (r: TypeVersionRow): TemplateTypeVersion => ({
  typeName: r.type_name,
  version: r.version,
  image: r.image,
  adhoc: r.adhoc,
  parameters: r.parameters,
  outputs: r.outputs,
  actions: r.actions,
  tfVars: r.tf_vars,
  inUse: r.in_use,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

const SELECT_TYPE = `
  SELECT t.*, (SELECT max(version) FROM template_type_versions v WHERE v.type_name = t.name) AS latest_version
    FROM template_types t`;
const SELECT_TYPE_VERSION = `
  SELECT v.*, EXISTS (SELECT 1 FROM template_versions tv WHERE tv.type_name = v.type_name AND tv.type_version = v.version)
           OR EXISTS (SELECT 1 FROM template_builds b WHERE b.type_name = v.type_name AND b.type_version = v.version
                        AND b.status IN ('pending', 'running')) AS in_use
    FROM template_type_versions v`;

export async function createTemplateType(db: Queryable, t: { name: string; description: string; createdBy: string }): Promise<TemplateType> {
  try {
    await db.query('INSERT INTO template_types (name, description, created_by) VALUES ($1, $2, $3)', [t.name, t.description, t.createdBy]);
  } catch (err) {
    if (pgErrorCode(err) === PgCode.UniqueViolation) {
      throw new AppError(ErrorCode.TemplateTypeExists, `template type '${t.name}' already exists`, { name: t.name });
    }
    throw err;
  }
  return (await getTemplateType(db, t.name))!;
}

export async function getTemplateType(db: Queryable, name: string): Promise<TemplateType | undefined> {
  const { rows } = await db.query<TypeRow>(`${SELECT_TYPE} WHERE t.name = $1`, [name]);
  return rows[0] && toType(rows[0]);
}

export async function listTemplateTypes(db: Queryable): Promise<TemplateType[]> {
  const { rows } = await db.query<TypeRow>(`${SELECT_TYPE} ORDER BY t.name`);
  return rows.map(toType);
}

export async function addTemplateTypeVersion(db: Db, typeName: string, spec: TemplateTypeVersionSpec, createdBy: string): Promise<TemplateTypeVersion> {
  return inTransaction(db, async (tx) => {
    const locked = await tx.query('SELECT 1 FROM template_types WHERE name = $1 FOR UPDATE', [typeName]);
    if (locked.rowCount === 0) throw new AppError(ErrorCode.TemplateTypeNotFound, `template type '${typeName}' does not exist`, { name: typeName });
    const { rows } = await tx.query<{ version: number }>(
      `INSERT INTO template_type_versions (type_name, version, image, adhoc, parameters, outputs, actions, tf_vars, created_by)
       VALUES ($1::text, (SELECT coalesce(max(version), 0) + 1 FROM template_type_versions WHERE type_name = $1::text), $2, $3, $4, $5, $6, $7, $8)
       RETURNING version`,
      [typeName, spec.image, spec.adhoc, JSON.stringify(spec.parameters), JSON.stringify(spec.outputs), spec.actions, spec.tfVars, createdBy],
    );
    return (await getTemplateTypeVersion(tx, typeName, rows[0]!.version))!;
  });
}

/**
 * Replaces a version's content while nothing uses it; once a template version (or a build under way) uses it,
 * it is frozen and a change must be a new version.
 */
export async function updateTemplateTypeVersion(db: Db, typeName: string, version: number, spec: TemplateTypeVersionSpec): Promise<TemplateTypeVersion> {
  return inTransaction(db, async (tx) => {
    // The type's row lock is also taken by builds and template versions made from it (lockTypeVersion).
    await tx.query('SELECT 1 FROM template_types WHERE name = $1 FOR UPDATE', [typeName]);
    const current = await getTemplateTypeVersion(tx, typeName, version);
    if (!current) throw typeVersionNotFound(typeName, version);
    if (current.inUse) {
      throw new AppError(ErrorCode.TemplateTypeVersionInUse, `template type ${typeName}@${version} is used by a template version; add a new version instead`, {
        type: typeName,
        version,
      });
    }
    await tx.query(
      `UPDATE template_type_versions SET image = $3, adhoc = $4, parameters = $5, outputs = $6, actions = $7, tf_vars = $8, updated_at = now()
        WHERE type_name = $1 AND version = $2`,
      [typeName, version, spec.image, spec.adhoc, JSON.stringify(spec.parameters), JSON.stringify(spec.outputs), spec.actions, spec.tfVars],
    );
    return (await getTemplateTypeVersion(tx, typeName, version))!;
  });
}

/** Takes the type's row lock (see updateTemplateTypeVersion) and reads the version: use it inside a transaction. */
export async function lockTypeVersion(tx: Queryable, typeName: string, version: number): Promise<TemplateTypeVersion> {
  await tx.query('SELECT 1 FROM template_types WHERE name = $1 FOR SHARE', [typeName]);
  const found = await getTemplateTypeVersion(tx, typeName, version);
  if (!found) throw typeVersionNotFound(typeName, version);
  return found;
}

export function typeVersionNotFound(typeName: string, version: number): AppError {
  return new AppError(ErrorCode.TemplateTypeVersionNotFound, `template type version ${typeName}@${version} does not exist`, { type: typeName, version });
}

export async function getTemplateTypeVersion(db: Queryable, typeName: string, version: number): Promise<TemplateTypeVersion | undefined> {
  const { rows } = await db.query<TypeVersionRow>(`${SELECT_TYPE_VERSION} WHERE v.type_name = $1 AND v.version = $2`, [typeName, version]);
  return rows[0] && toTypeVersion(rows[0]);
}

export async function listTemplateTypeVersions(db: Queryable, typeName: string): Promise<TemplateTypeVersion[]> {
  const { rows } = await db.query<TypeVersionRow>(`${SELECT_TYPE_VERSION} WHERE v.type_name = $1 ORDER BY v.version`, [typeName]);
  return rows.map(toTypeVersion);
}
