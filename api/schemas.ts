import { z } from 'zod';
import { DEPLOYMENT_STATUSES, PARAMETER_TYPES } from '../core/domain.js';
import { ID_PATTERN, NAME_PATTERN } from '../core/ids.js';

const nameMessage = 'must be 1-40 lowercase letters, digits or "-", starting and ending with a letter or digit';

export const Name = z.string().regex(NAME_PATTERN, nameMessage);
export const DeploymentId = z.string().regex(ID_PATTERN, 'is not a deployment id').startsWith('dep-', 'is not a deployment id');
export const RunId = z.string().regex(ID_PATTERN, 'is not a run id').startsWith('run-', 'is not a run id');
export const ActionName = z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, 'must be a lowercase word such as "deploy"');
export const VersionNumber = z.coerce.number().int().min(1);

export const ParameterDeclarationSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'must be a letter or "_" followed by letters, digits or "_"'),
  type: z.enum(PARAMETER_TYPES),
  required: z.boolean().default(false),
  default: z.json().optional(),
  sensitive: z.boolean().default(false),
  description: z.string().max(2000).optional(),
});

export const CreateTemplateBody = z.strictObject({
  name: Name,
  description: z.string().max(2000).default(''),
});

export const CreateTemplateVersionBody = z.strictObject({
  image: z
    .string()
    .min(1)
    .max(512)
    .regex(/^[a-z0-9][a-z0-9._\-/:@]*$/i, 'must be an image reference such as registry/name:tag'),
  parameters: z.array(ParameterDeclarationSchema).max(200).default([]),
  actions: z.array(ActionName).min(1).max(20).default(['deploy', 'destroy']),
  tfVars: z.boolean().default(false),
});

export const TargetSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('cluster') }),
  z.strictObject({ kind: z.literal('node'), node: Name }),
]);

export const CreateDeploymentBody = z.strictObject({
  name: z.string().max(200).default(''),
  template: z.strictObject({ name: Name, version: z.number().int().min(1).optional() }),
  parameters: z.record(z.string(), z.json()).default({}),
  target: TargetSchema.default({ kind: 'node', node: 'local' }),
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
