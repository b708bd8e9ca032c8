/** Schemas of template types, sources and builds (api/schemas.ts has the rest). */
import { BUILD_STATUSES } from '../core/db/builds.js';
import { ActionName, Name, ParameterDeclarationSchema, VersionNumber } from './schemas.js';
import { z } from './zod.js';

const Timestamp = z.string().openapi({ format: 'date-time' });
const ImageRef = z
  .string()
  .min(1)
  .max(512)
  .regex(/^[a-z0-9][a-z0-9._\-/:@]*$/i, 'must be an image reference such as registry/name:tag');

export const BuildId = z.string().regex(/^bld-[a-z0-9]{12}$/, 'is not a build id').openapi({ example: 'bld-0h3k9x2m4q7w' });
export const SourceId = z.string().regex(/^src-[a-z0-9]{12}$/, 'is not a source id').openapi({ example: 'src-8fj2k4l0z9qa' });

export const OutputDeclarationSchema = z
  .strictObject({ name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/), description: z.string().max(2000).optional() })
  .openapi('OutputDeclaration');

export const CreateTemplateTypeBody = z.strictObject({ name: Name, description: z.string().max(2000).default('') });

export const TemplateTypeVersionBody = z.strictObject({
  image: ImageRef.openapi({ description: 'the base image (FROM of built templates), or an ad-hoc type\'s generic image' }),
  adhoc: z.boolean().default(false).openapi({ description: 'templates of this type are files mounted at /template at run time, never built' }),
  parameters: z.array(ParameterDeclarationSchema).max(200).default([]),
  outputs: z.array(OutputDeclarationSchema).max(200).default([]),
  actions: z.array(ActionName).min(1).max(20).default(['deploy', 'destroy']),
  tfVars: z.boolean().default(false),
});

export const TemplateTypeSchema = z
  .object({ name: Name, description: z.string(), createdBy: z.string(), createdAt: Timestamp, latestVersion: z.number().int().nullable() })
  .openapi('TemplateType');

export const TemplateTypeVersionSchema = z
  .object({
    typeName: Name,
    version: z.number().int(),
    image: z.string(),
    adhoc: z.boolean(),
    parameters: z.array(ParameterDeclarationSchema),
    outputs: z.array(OutputDeclarationSchema),
    actions: z.array(z.string()),
    tfVars: z.boolean(),
    inUse: z.boolean().openapi({ description: 'used by a template version: it can no longer change' }),
    createdBy: z.string(),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .openapi('TemplateTypeVersion');

export const TemplateTypeWithVersionsSchema = TemplateTypeSchema.extend({ versions: z.array(TemplateTypeVersionSchema) }).openapi('TemplateTypeWithVersions');

export const TypeVersionParams = z.strictObject({ name: Name, version: VersionNumber });
export const BuildParams = z.strictObject({ id: BuildId });

export const TypeRef = z.strictObject({ name: Name, version: z.number().int().min(1) });

export const ParameterPlanSchema = z
  .strictObject({
    delegate: z
      .union([z.literal('all'), z.array(z.string()).max(200)])
      .default('all')
      .openapi({ description: 'the type\'s parameters its deployments set ("all", or their names)' }),
    fixed: z.record(z.string(), z.unknown()).default({}).openapi({ description: 'values for type parameters not delegated' }),
    own: z.array(ParameterDeclarationSchema).max(200).default([]).openapi({ description: 'the template\'s own parameters' }),
  })
  .openapi('ParameterPlan');

export const BuildSourceSchema = z
  .discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('upload'), sourceId: SourceId }),
    z.strictObject({
      kind: z.literal('git'),
      url: z.string().min(1).max(2048),
      ref: z.string().min(1).max(255),
      subdir: z.string().min(1).max(1024).optional(),
    }),
  ])
  .openapi('BuildSource');

export const CreateBuildBody = z.strictObject({
  type: TypeRef,
  source: BuildSourceSchema,
  parameters: ParameterPlanSchema.default({ delegate: 'all', fixed: {}, own: [] }),
});

export const AdhocVersionBody = z.strictObject({
  type: TypeRef,
  source: z.strictObject({ kind: z.literal('upload'), sourceId: SourceId }),
  parameters: ParameterPlanSchema.default({ delegate: 'all', fixed: {}, own: [] }),
});

export const StoredSourceSchema = z
  .object({
    id: SourceId,
    sha256: z.string(),
    format: z.enum(['zip', 'tgz', 'git']),
    files: z.number().int(),
    bytes: z.number().int(),
    createdBy: z.string(),
    createdAt: Timestamp,
  })
  .openapi('TemplateSource');

export const BuildSchema = z
  .object({
    id: BuildId,
    templateName: Name,
    type: z.object({ name: Name, version: z.number().int() }),
    source: BuildSourceSchema,
    sourceId: SourceId.nullable(),
    parameters: ParameterPlanSchema,
    status: z.enum(BUILD_STATUSES),
    reason: z.string().nullable().openapi({ description: 'source-rejected, build-failed, push-failed, timeout or infrastructure' }),
    message: z.string().nullable(),
    version: z.number().int().openapi({ description: 'the template version it makes (reserved when requested; unused if the build fails)' }),
    image: z.string().nullable().openapi({ description: 'the pushed image, by digest' }),
    requestedBy: z.string(),
    createdAt: Timestamp,
    startedAt: Timestamp.nullable(),
    finishedAt: Timestamp.nullable(),
  })
  .openapi('Build');
