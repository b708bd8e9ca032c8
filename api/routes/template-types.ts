import {
  addTemplateTypeVersion,
  createTemplateType,
  getTemplateType,
  getTemplateTypeVersion,
  listTemplateTypeVersions,
  listTemplateTypes,
  typeVersionNotFound,
  updateTemplateTypeVersion,
  type TemplateTypeVersionSpec,
} from '../../core/db/template-types.js';
import { AppError, ErrorCode, notFound } from '../../core/errors.js';
import { checkDeclarations } from '../../core/parameters.js';
import type { ApiDeps } from '../deps.js';
import { defineRoute, type AnyRoute } from '../http/route.js';
import { NameParams } from '../schemas.js';
import {
  CreateTemplateTypeBody,
  TemplateTypeSchema,
  TemplateTypeVersionBody,
  TemplateTypeVersionSchema,
  TemplateTypeWithVersionsSchema,
  TypeVersionParams,
} from '../template-schemas.js';
import { z } from '../zod.js';
import { AUTHORS, READERS } from '../http/roles.js';


/** The same checks as a template version's, plus outputs. */
export function checkTypeVersion(spec: TemplateTypeVersionSpec): void {
  const problems = checkDeclarations(spec.parameters);
  if (problems.length > 0) {
    throw new AppError(ErrorCode.InvalidParameters, `invalid parameter declarations: ${problems.map((p) => `${p.parameter} ${p.problem}`).join('; ')}`, {
      problems,
    });
  }
  if (new Set(spec.actions).size !== spec.actions.length) throw new AppError(ErrorCode.ValidationFailed, 'invalid body: actions must be distinct');
  if (new Set(spec.outputs.map((o) => o.name)).size !== spec.outputs.length) {
    throw new AppError(ErrorCode.ValidationFailed, 'invalid body: outputs must have distinct names');
  }
}

export function templateTypeRoutes(deps: Pick<ApiDeps, 'db'>): AnyRoute[] {
  const { db } = deps;
  return [
    defineRoute({
      method: 'post',
      path: '/v1/template-types',
      operationId: 'createTemplateType',
      summary: 'Create a template type: a base image and what templates made from it declare, in versions',
      tag: 'template types',
      roles: AUTHORS,
      body: CreateTemplateTypeBody,
      idempotent: true,
      responses: { 201: { description: 'created', schema: TemplateTypeSchema } },
      errors: [ErrorCode.TemplateTypeExists, ErrorCode.IdempotencyKeyReused, ErrorCode.IdempotencyKeyInUse],
      async handler({ body, principal }) {
        return { status: 201, body: await createTemplateType(db, { ...body, createdBy: principal!.name }) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/template-types',
      operationId: 'listTemplateTypes',
      summary: 'List template types',
      tag: 'template types',
      roles: READERS,
      responses: { 200: { description: 'the types', schema: z.object({ items: z.array(TemplateTypeSchema) }) } },
      errors: [],
      async handler() {
        return { status: 200, body: { items: await listTemplateTypes(db) } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/template-types/{name}',
      operationId: 'getTemplateType',
      summary: 'Read a template type with its versions',
      tag: 'template types',
      roles: READERS,
      params: NameParams,
      responses: { 200: { description: 'the type', schema: TemplateTypeWithVersionsSchema } },
      errors: [ErrorCode.TemplateTypeNotFound],
      async handler({ params }) {
        const type = await getTemplateType(db, params.name);
        if (!type) throw notFound(ErrorCode.TemplateTypeNotFound, 'template type', params.name);
        return { status: 200, body: { ...type, versions: await listTemplateTypeVersions(db, params.name) } };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/template-types/{name}/versions',
      operationId: 'createTemplateTypeVersion',
      summary: 'Add a version to a template type',
      tag: 'template types',
      roles: AUTHORS,
      params: NameParams,
      body: TemplateTypeVersionBody,
      idempotent: true,
      responses: { 201: { description: 'created; versions are numbered 1, 2, …', schema: TemplateTypeVersionSchema } },
      errors: [ErrorCode.TemplateTypeNotFound, ErrorCode.InvalidParameters, ErrorCode.IdempotencyKeyReused, ErrorCode.IdempotencyKeyInUse],
      async handler({ params, body, principal }) {
        checkTypeVersion(body);
        return { status: 201, body: await addTemplateTypeVersion(db, params.name, body, principal!.name) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/template-types/{name}/versions/{version}',
      operationId: 'getTemplateTypeVersion',
      summary: 'Read one version of a template type',
      tag: 'template types',
      roles: READERS,
      params: TypeVersionParams,
      responses: { 200: { description: 'the version', schema: TemplateTypeVersionSchema } },
      errors: [ErrorCode.TemplateTypeVersionNotFound],
      async handler({ params }) {
        const found = await getTemplateTypeVersion(db, params.name, params.version);
        if (!found) throw typeVersionNotFound(params.name, params.version);
        return { status: 200, body: found };
      },
    }),
    defineRoute({
      method: 'put',
      path: '/v1/template-types/{name}/versions/{version}',
      operationId: 'replaceTemplateTypeVersion',
      summary: 'Replace a type version that nothing uses yet; once a template version uses it, it is immutable',
      tag: 'template types',
      roles: AUTHORS,
      params: TypeVersionParams,
      body: TemplateTypeVersionBody,
      responses: { 200: { description: 'replaced', schema: TemplateTypeVersionSchema } },
      errors: [ErrorCode.TemplateTypeVersionNotFound, ErrorCode.TemplateTypeVersionInUse, ErrorCode.InvalidParameters],
      async handler({ params, body }) {
        checkTypeVersion(body);
        return { status: 200, body: await updateTemplateTypeVersion(db, params.name, params.version, body) };
      },
    }),
  ];
}
