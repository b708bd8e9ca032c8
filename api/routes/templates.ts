import { addTemplateVersion, insertTemplateVersion, createTemplate, getTemplate, getTemplateVersion, listTemplateVersions, listTemplates } from '../../core/db/templates.js';
import { AppError, ErrorCode, notFound } from '../../core/errors.js';
import type { RunLimits } from '../../core/domain.js';
import { checkDeclarations } from '../../core/parameters.js';
import { inTransaction } from '../../core/db/pool.js';
import { getSource } from '../../core/db/template-sources.js';
import { lockTypeVersion } from '../../core/db/template-types.js';
import type { ApiDeps } from '../deps.js';
import { AdhocVersionBody } from '../template-schemas.js';
import { planOrThrow } from './builds.js';
import { defineRoute, type AnyRoute } from '../http/route.js';
import {
  CreateTemplateBody,
  CreateTemplateVersionBody,
  NameParams,
  TemplateSchema,
  TemplateVersionSchema,
  TemplateWithVersionsSchema,
  VersionParams,
} from '../schemas.js';
import { z } from '../zod.js';
import { AUTHORS, READERS } from '../http/roles.js';


export function checkTimeout(limits: RunLimits, max: number): void {
  if (limits.timeoutSeconds !== undefined && limits.timeoutSeconds > max) {
    throw new AppError(ErrorCode.LimitExceeded, `limits.timeoutSeconds ${limits.timeoutSeconds} is over this installation's maximum of ${max}`, {
      max,
    });
  }
}

export function templateRoutes(deps: Pick<ApiDeps, 'db' | 'maxRunTimeoutSeconds'>): AnyRoute[] {
  const { db } = deps;
  return [
    defineRoute({
      method: 'post',
      path: '/v1/templates',
      operationId: 'createTemplate',
      summary: 'Create a template',
      tag: 'templates',
      roles: AUTHORS,
      body: CreateTemplateBody,
      idempotent: true,
      responses: { 201: { description: 'created', schema: TemplateSchema } },
      errors: [ErrorCode.TemplateExists, ErrorCode.IdempotencyKeyReused, ErrorCode.IdempotencyKeyInUse],
      async handler({ body, principal }) {
        return { status: 201, body: await createTemplate(db, { ...body, createdBy: principal!.name }) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/templates',
      operationId: 'listTemplates',
      summary: 'List templates',
      tag: 'templates',
      roles: READERS,
      responses: { 200: { description: 'every template, by name', schema: z.object({ items: z.array(TemplateSchema) }) } },
      errors: [],
      async handler() {
        return { status: 200, body: { items: await listTemplates(db) } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/templates/{name}',
      operationId: 'getTemplate',
      summary: 'Read a template with its versions',
      tag: 'templates',
      roles: READERS,
      params: NameParams,
      responses: { 200: { description: 'the template', schema: TemplateWithVersionsSchema } },
      errors: [ErrorCode.TemplateNotFound],
      async handler({ params }) {
        const template = await getTemplate(db, params.name);
        if (!template) throw notFound(ErrorCode.TemplateNotFound, 'template', params.name);
        return { status: 200, body: { ...template, versions: await listTemplateVersions(db, params.name) } };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/templates/{name}/versions',
      operationId: 'createTemplateVersion',
      summary: 'Add an immutable version to a template, pointing at an existing image',
      tag: 'templates',
      roles: AUTHORS,
      params: NameParams,
      body: CreateTemplateVersionBody,
      idempotent: true,
      responses: { 201: { description: 'created; versions are numbered 1, 2, …', schema: TemplateVersionSchema } },
      errors: [ErrorCode.TemplateNotFound, ErrorCode.InvalidParameters, ErrorCode.LimitExceeded, ErrorCode.IdempotencyKeyReused, ErrorCode.IdempotencyKeyInUse],
      async handler({ params, body, principal }) {
        const problems = checkDeclarations(body.parameters);
        if (problems.length > 0) {
          throw new AppError(
            ErrorCode.InvalidParameters,
            `invalid parameter declarations: ${problems.map((p) => `${p.parameter} ${p.problem}`).join('; ')}`,
            { problems },
          );
        }
        if (new Set(body.actions).size !== body.actions.length) {
          throw new AppError(ErrorCode.ValidationFailed, 'invalid body: actions must be distinct');
        }
        checkTimeout(body.limits, deps.maxRunTimeoutSeconds);
        return { status: 201, body: await addTemplateVersion(db, { templateName: params.name, ...body, createdBy: principal!.name }) };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/templates/{name}/adhoc-versions',
      operationId: 'createAdhocTemplateVersion',
      summary: 'Add a version made of uploaded files run by an ad-hoc type\'s generic image (no build)',
      description:
        'The files (a source from POST /v1/template-sources) are mounted read-only at /template in a container of the type\'s image at every run, on Docker nodes and on Kubernetes alike.',
      tag: 'templates',
      roles: AUTHORS,
      params: NameParams,
      body: AdhocVersionBody,
      idempotent: true,
      responses: { 201: { description: 'created', schema: TemplateVersionSchema } },
      errors: [ErrorCode.TemplateNotFound, ErrorCode.TemplateTypeVersionNotFound, ErrorCode.SourceNotFound, ErrorCode.InvalidParameters, ErrorCode.IdempotencyKeyReused, ErrorCode.IdempotencyKeyInUse],
      async handler({ params, body, principal }) {
        const source = await getSource(db, body.source.sourceId);
        if (!source) throw notFound(ErrorCode.SourceNotFound, 'source', body.source.sourceId);
        const version = await inTransaction(db, async (tx) => {
          const type = await lockTypeVersion(tx, body.type.name, body.type.version);
          if (!type.adhoc) {
            throw new AppError(ErrorCode.ValidationFailed, `template type ${type.typeName}@${type.version} is not ad-hoc: build its templates with POST /v1/templates/{name}/builds`);
          }
          const plan = planOrThrow(type.parameters, body.parameters);
          return insertTemplateVersion(tx, {
            templateName: params.name,
            image: type.image,
            parameters: plan.parameters,
            actions: type.actions,
            tfVars: type.tfVars,
            limits: {},
            createdBy: principal!.name,
            origin: {
              type: body.type,
              source: { kind: 'upload', sourceId: source.id, format: source.format === 'zip' ? 'zip' : 'tgz', sha256: source.sha256 },
              buildId: null,
              adhoc: true,
              fixedParameters: plan.fixed,
            },
          });
        });
        return { status: 201, body: version };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/templates/{name}/versions/{version}',
      operationId: 'getTemplateVersion',
      summary: 'Read one version of a template',
      tag: 'templates',
      roles: READERS,
      params: VersionParams,
      responses: { 200: { description: 'the version', schema: TemplateVersionSchema } },
      errors: [ErrorCode.TemplateVersionNotFound],
      async handler({ params }) {
        const found = await getTemplateVersion(db, params.name, params.version);
        if (!found) throw notFound(ErrorCode.TemplateVersionNotFound, 'template version', `${params.name}@${params.version}`);
        return { status: 200, body: found };
      },
    }),
  ];
}
