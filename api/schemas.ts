import { ROLES } from '../core/db/tokens.js';
import { z } from './zod.js';
import { DEPLOYMENT_STATUSES, FAILURE_REASONS, PARAMETER_TYPES, RUN_PHASES, RUN_STATUSES } from '../core/domain.js';
import { ID_PATTERN, NAME_PATTERN } from '../core/ids.js';
import { NODE_ID_PATTERN } from '../core/pki.js';

const nameMessage = 'must be 1-40 lowercase letters, digits or "-", starting and ending with a letter or digit';

export const Name = z.string().regex(NAME_PATTERN, nameMessage).openapi({ example: 'web-stack' });
export const DeploymentId = z
  .string()
  .regex(ID_PATTERN, 'is not a deployment id')
  .startsWith('dep-', 'is not a deployment id')
  .openapi({ example: 'dep-4kq0m2x9ab7c' });
export const RunId = z
  .string()
  .regex(ID_PATTERN, 'is not a run id')
  .startsWith('run-', 'is not a run id')
  .openapi({ example: 'run-zp3v8c1n0qwe' });
export const ActionName = z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, 'must be a lowercase word such as "deploy"');
export const VersionNumber = z.coerce.number().int().min(1);

export const ParameterDeclarationSchema = z
  .strictObject({
  name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'must be a letter or "_" followed by letters, digits or "_"'),
  type: z.enum(PARAMETER_TYPES),
  required: z.boolean().default(false),
  default: z.unknown().optional().openapi({ description: 'a JSON value of the declared type' }),
  sensitive: z.boolean().default(false),
  description: z.string().max(2000).optional(),
  })
  .openapi('ParameterDeclaration');

export const CreateTemplateBody = z.strictObject({
  name: Name,
  description: z.string().max(2000).default(''),
});

export const LimitsSchema = z
  .strictObject({
    timeoutSeconds: z.number().int().min(1).optional().openapi({ description: 'run timeout; at most the installation maximum' }),
    cpus: z.number().positive().max(256).optional().openapi({ description: 'CPU limit of the container' }),
    memoryMb: z.number().int().min(6).max(1024 * 1024).optional().openapi({ description: 'memory limit of the container, MiB' }),
    stateMaxMb: z
      .number()
      .int()
      .min(1)
      .max(1024 * 1024)
      .optional()
      .openapi({ description: 'largest /state archive (compressed) a run may store, MiB; beyond it the run fails as state-too-large and the previous version stays current' }),
  })
  .openapi('RunLimits');

export const CreateTemplateVersionBody = z.strictObject({
  image: z
    .string()
    .min(1)
    .max(512)
    .regex(/^[a-z0-9][a-z0-9._\-/:@]*$/i, 'must be an image reference such as registry/name:tag'),
  parameters: z.array(ParameterDeclarationSchema).max(200).default([]),
  actions: z.array(ActionName).min(1).max(20).default(['deploy', 'destroy']),
  tfVars: z.boolean().default(false),
  limits: LimitsSchema.default({}),
});

export const TargetSchema = z
  .discriminatedUnion('kind', [z.strictObject({ kind: z.literal('cluster') }), z.strictObject({ kind: z.literal('node'), node: Name })])
  .openapi('Target');

export const CreateDeploymentBody = z.strictObject({
  name: z.string().max(200).default(''),
  template: z.strictObject({ name: Name, version: z.number().int().min(1).optional() }),
  parameters: z.record(z.string(), z.unknown()).default({}),
  target: TargetSchema.default({ kind: 'node', node: 'local' }),
  limits: LimitsSchema.default({}).openapi({ description: 'overrides the template version\'s limits' }),
});

export const UpgradeDeploymentBody = z.strictObject({
  version: z.number().int().min(1).optional().openapi({ description: 'the template version; the latest when left out' }),
  parameters: z
    .record(z.string(), z.unknown())
    .optional()
    .openapi({ description: 'all parameter values for the new version; when left out, the current values (sensitive ones included)' }),
});

export const ListDeploymentsQuery = z.strictObject({
  status: z.enum(DEPLOYMENT_STATUSES).optional(),
  template: Name.optional(),
  target: z
    .string()
    .regex(/^(cluster|node:[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?)$/, 'must be "cluster" or "node:<id>"')
    .optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().max(100).optional(),
});

export const ListRunsQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().max(100).optional(),
});

export const LogQuery = z.strictObject({
  stream: z
    .string()
    .regex(/^(stdout|stderr|file:[!-~][ -~]{0,199})$/, 'must be stdout, stderr or file:<name of a file in /logs>')
    .transform((s) => s as 'stdout' | 'stderr' | `file:${string}`)
    .optional()
    .openapi({ description: 'stdout, stderr, or file:<name> for a file the template wrote in /logs' }),
  follow: z
    .enum(['true', 'false'])
    .transform((v) => v === 'true')
    .optional()
    .openapi({ description: 'stream as Server-Sent Events until the run ends' }),
  from: z.coerce.number().int().min(0).optional().openapi({ description: 'with follow: continue after this event id' }),
});

export const CreateRunBody = z.strictObject({
  action: ActionName,
});

/** Cursors are opaque to callers; inside they are the creation sequence number. */
export function encodeCursor(seq: number | null): string | null {
  return seq === null ? null : Buffer.from(`s${seq}`).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): number | undefined | null {
  if (cursor === undefined) return undefined;
  const m = /^s(\d{1,18})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  return m ? Number(m[1]) : null;
}

export const CursorPage = <T extends z.ZodType>(item: T, name: string) =>
  z.object({ items: z.array(item), nextCursor: z.string().nullable() }).openapi(name);

export const NameParams = z.object({ name: Name });
export const VersionParams = z.object({ name: Name, version: VersionNumber });
export const DeploymentParams = z.object({ id: DeploymentId });
export const RunParams = z.object({ id: RunId });

const Timestamp = z.string().openapi({ format: 'date-time' });

export const TemplateSchema = z
  .object({
    name: Name,
    description: z.string(),
    createdBy: z.string(),
    createdAt: Timestamp,
    latestVersion: z.number().int().nullable(),
  })
  .openapi('Template');

export const TemplateVersionSchema = z
  .object({
    templateName: Name,
    version: z.number().int(),
    image: z.string(),
    parameters: z.array(ParameterDeclarationSchema),
    actions: z.array(z.string()),
    tfVars: z.boolean(),
    limits: LimitsSchema,
    origin: z
      .object({
        type: z.object({ name: Name, version: z.number().int() }),
        source: z.record(z.string(), z.unknown()).openapi({ description: 'upload (sourceId, format, sha256) or git (url, ref, subdir, commit, sha256)' }),
        buildId: z.string().nullable(),
        adhoc: z.boolean(),
        fixedParameters: z.record(z.string(), z.unknown()),
      })
      .nullable()
      .openapi({ description: 'for a version made from a template type: how; null for a version naming an image' }),
    createdBy: z.string(),
    createdAt: Timestamp,
  })
  .openapi('TemplateVersion');

export const TemplateWithVersionsSchema = TemplateSchema.extend({ versions: z.array(TemplateVersionSchema) }).openapi('TemplateWithVersions');

export const RunSummarySchema = z
  .object({
    id: RunId,
    action: z.string(),
    status: z.enum(RUN_STATUSES),
    phase: z.enum(RUN_PHASES).optional(),
    reason: z.enum(FAILURE_REASONS).optional(),
    exitCode: z.number().int().optional(),
  })
  .openapi('RunSummary');

export const RunSchema = z
  .object({
    id: RunId,
    deploymentId: DeploymentId,
    action: z.string(),
    status: z.enum(RUN_STATUSES),
    phase: z.enum(RUN_PHASES).nullable(),
    reason: z.enum(FAILURE_REASONS).nullable(),
    message: z.string().nullable(),
    exitCode: z.number().int().nullable(),
    outputs: z.record(z.string(), z.unknown()).nullable(),
    warnings: z.array(z.string()),
    stateVersionFrom: z.number().int().nullable().openapi({ description: 'the state version restored into /state' }),
    stateVersion: z.number().int().nullable().openapi({ description: 'the state version its /state was archived as' }),
    requestedBy: z.string(),
    cancelRequestedBy: z.string().nullable(),
    createdAt: Timestamp,
    startedAt: Timestamp.nullable(),
    finishedAt: Timestamp.nullable(),
  })
  .openapi('Run');

export const DeploymentSchema = z
  .object({
    id: DeploymentId,
    name: z.string(),
    template: z.object({ name: Name, version: z.number().int() }),
    parameters: z.record(z.string(), z.unknown()).openapi({ description: 'non-sensitive parameter values' }),
    sensitiveParameters: z.array(z.string()).openapi({ description: 'names of the sensitive parameters that have a value; values are never returned' }),
    target: TargetSchema,
    status: z.enum(DEPLOYMENT_STATUSES),
    outputs: z.record(z.string(), z.unknown()),
    currentStateVersion: z.number().int().nullable(),
    limits: LimitsSchema,
    activeRun: RunSummarySchema.nullable(),
    lastRun: RunSummarySchema.nullable(),
    createdBy: z.string(),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .openapi('Deployment');

export const Role = z.enum(ROLES);

export const TokenSchema = z
  .object({
    id: z.string(),
    name: Name,
    role: Role,
    createdBy: z.string(),
    createdAt: Timestamp,
    expiresAt: Timestamp.nullable(),
    revokedAt: Timestamp.nullable(),
    revokedBy: z.string().nullable(),
  })
  .openapi('Token');

export const CreateTokenBody = z.strictObject({
  name: Name,
  role: Role,
  /** Seconds from now; unset means the token does not expire. */
  expiresInSeconds: z.number().int().min(60).max(10 * 365 * 24 * 3600).optional(),
});

export const CreatedTokenSchema = TokenSchema.extend({
  token: z.string().openapi({ description: 'the bearer token; shown only in this response' }),
}).openapi('CreatedToken');

export const TokenParams = z.object({ id: z.string().regex(/^[a-z0-9]{12}$/, 'is not a token id') });

export const HealthSchema = z
  .object({
    status: z.enum(['ok', 'degraded']),
    checks: z.record(z.string(), z.object({ ok: z.boolean(), error: z.string().optional() })),
  })
  .openapi('Health');

const NodeLabels = z.record(z.string().regex(/^[a-z0-9]([-a-z0-9_./]{0,61}[a-z0-9])?$/, 'a label key: lowercase letters, digits, - _ . /'), z.string().max(253)).refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');

export const NodeId = z.string().regex(NODE_ID_PATTERN, 'a node id: 1-32 lowercase letters, digits and dashes, starting and ending with a letter or digit');
export const NodeParams = z.object({ id: NodeId });

export const CreateNodeBody = z.strictObject({
  /** The node's id: it names its task queue (`node-<name>`) and its certificate. */
  name: NodeId,
  description: z.string().max(500).default(''),
  labels: NodeLabels.default({}),
});

export const NodeSchema = z
  .object({
    id: z.string(),
    description: z.string(),
    labels: z.record(z.string(), z.string()),
    status: z.enum(['pending', 'active', 'revoked']).openapi({ description: 'pending until it enrols; active; revoked (its calls are refused)' }),
    connection: z.enum(['online', 'offline', 'never-seen', 'revoked']).openapi({ description: 'online when the node called within the last 90 s' }),
    createdBy: z.string(),
    createdAt: Timestamp,
    enrolledAt: Timestamp.nullable(),
    revokedAt: Timestamp.nullable(),
    revokedBy: z.string().nullable(),
    certificateNotAfter: Timestamp.nullable(),
    lastSeenAt: Timestamp.nullable(),
    version: z.string().nullable(),
    capacity: z.number().int().nullable(),
    activeRuns: z.array(z.string()),
  })
  .openapi('Node');

export const NodeEnrolmentSchema = z
  .object({
    token: z.string().openapi({ description: 'one-time enrolment token (gge_…); shown only in this response' }),
    expiresAt: Timestamp,
    gateway: z.string().openapi({ description: 'host:port the node dials' }),
    caCertificate: z.string().openapi({ description: 'the node CA (PEM): the node pins it when it enrols' }),
  })
  .openapi('NodeEnrolment');

export const CreatedNodeSchema = z.object({ node: NodeSchema, enrolment: NodeEnrolmentSchema }).openapi('CreatedNode');
