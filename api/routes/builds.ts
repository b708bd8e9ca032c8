import { WorkflowNotFoundError } from '@temporalio/client';
import { endBuild, getBuild, insertBuild, listBuilds, readBuildLog, type Build } from '../../core/db/builds.js';
import { inTransaction } from '../../core/db/pool.js';
import { getSource } from '../../core/db/template-sources.js';
import { lockTypeVersion } from '../../core/db/template-types.js';
import { getTemplate } from '../../core/db/templates.js';
import { BuildFailure, builderTaskQueue } from '../../core/domain.js';
import { AppError, ErrorCode, notFound } from '../../core/errors.js';
import { planParameters, type ParameterPlan } from '../../core/parameter-plan.js';
import { checkGitSource } from '../../core/template-sources/index.js';
import { buildWorkflowId, type BuildWorkflowInput } from '../../workflows/build.js';
import type { ApiDeps } from '../deps.js';
import { defineRoute, type AnyRoute } from '../http/route.js';
import { NameParams } from '../schemas.js';
import { BuildParams, BuildSchema, CreateBuildBody, SourceId, StoredSourceSchema } from '../template-schemas.js';
import { z } from '../zod.js';
import { AUTHORS, READERS } from '../http/roles.js';
import { gone, pause, send } from '../http/streaming.js';

const ACTIVE = new Set(['pending', 'running']);
const FOLLOW_POLL_MS = 250;

export function planOrThrow(typeParameters: Parameters<typeof planParameters>[0], plan: ParameterPlan) {
  const planned = planParameters(typeParameters, plan);
  if (!planned.ok) {
    throw new AppError(ErrorCode.InvalidParameters, `the parameter plan does not fit the type: ${planned.problems.map((p) => `${p.parameter} ${p.problem}`).join('; ')}`, {
      problems: planned.problems,
    });
  }
  return planned;
}

export function buildRoutes(deps: Pick<ApiDeps, 'db' | 'temporal' | 'taskQueue' | 'builds'>): AnyRoute[] {
  const { db } = deps;
  return [
    defineRoute({
      method: 'post',
      path: '/v1/templates/{name}/builds',
      operationId: 'createBuild',
      summary: 'Build a new version of a template from a type and a source (an upload or a git repository)',
      description:
        'The build generates a Dockerfile (FROM the type\'s image, the files at /template, labels with the template, the build and the source digest), builds it, pushes it to the installation\'s registry and, on success, adds the template version pinned to the pushed digest. Follow it with GET /v1/builds/{id} and its log.',
      tag: 'builds',
      roles: AUTHORS,
      params: NameParams,
      body: CreateBuildBody,
      idempotent: true,
      responses: { 202: { description: 'accepted: the build is pending', schema: BuildSchema } },
      errors: [
        ErrorCode.TemplateNotFound,
        ErrorCode.TemplateTypeVersionNotFound,
        ErrorCode.SourceNotFound,
        ErrorCode.SourceRejected,
        ErrorCode.InvalidParameters,
        ErrorCode.BuildsUnavailable,
        ErrorCode.DependencyUnavailable,
        ErrorCode.IdempotencyKeyReused,
        ErrorCode.IdempotencyKeyInUse,
      ],
      async handler({ params, body, principal }) {
        if (!deps.builds.registry) {
          throw new AppError(ErrorCode.BuildsUnavailable, 'this installation has no registry to push template images to (GLIDERGUN_REGISTRY)');
        }
        if (!(await getTemplate(db, params.name))) throw notFound(ErrorCode.TemplateNotFound, 'template', params.name);
        if (body.source.kind === 'upload') {
          if (!(await getSource(db, body.source.sourceId))) throw notFound(ErrorCode.SourceNotFound, 'source', body.source.sourceId);
        } else {
          const refused = checkGitSource(body.source, { allowFileUrls: deps.builds.allowFileGitUrls });
          if (refused) throw new AppError(ErrorCode.SourceRejected, refused.message, { reason: refused.code });
        }
        const build = await inTransaction(db, async (tx) => {
          // Under the type's lock: the type version cannot change between this check and the build's row.
          const type = await lockTypeVersion(tx, body.type.name, body.type.version);
          if (type.adhoc) {
            throw new AppError(ErrorCode.ValidationFailed, `template type ${type.typeName}@${type.version} is ad-hoc: its templates are not built; add a version with POST /v1/templates/{name}/versions`);
          }
          planOrThrow(type.parameters, body.parameters);
          return insertBuild(tx, { templateName: params.name, type: body.type, source: body.source, parameters: body.parameters, requestedBy: principal!.name });
        });
        const input: BuildWorkflowInput = { buildId: build.id, builderTaskQueue: builderTaskQueue(deps.taskQueue), timeoutSeconds: deps.builds.timeoutSeconds };
        try {
          await deps.temporal.workflow.start('templateBuildWorkflow', { workflowId: buildWorkflowId(build.id), taskQueue: deps.taskQueue, args: [input] });
        } catch (err) {
          await endBuild(db, build.id, { status: 'failed', reason: BuildFailure.Infrastructure, message: 'the build could not be handed to Temporal' });
          throw new AppError(ErrorCode.DependencyUnavailable, `Temporal did not take the build: ${err instanceof Error ? err.message : String(err)}`);
        }
        return { status: 202, body: build };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/templates/{name}/builds',
      operationId: 'listBuilds',
      summary: 'The newest builds of a template (100 at most)',
      tag: 'builds',
      roles: READERS,
      params: NameParams,
      responses: { 200: { description: 'the builds, newest first', schema: z.object({ items: z.array(BuildSchema) }) } },
      errors: [ErrorCode.TemplateNotFound],
      async handler({ params }) {
        if (!(await getTemplate(db, params.name))) throw notFound(ErrorCode.TemplateNotFound, 'template', params.name);
        return { status: 200, body: { items: await listBuilds(db, params.name) } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/template-sources/{id}',
      operationId: 'getTemplateSource',
      summary: 'Read an uploaded (or fetched) template source: its digest, file count and size',
      tag: 'builds',
      roles: READERS,
      params: z.strictObject({ id: SourceId }),
      responses: { 200: { description: 'the source', schema: StoredSourceSchema } },
      errors: [ErrorCode.SourceNotFound],
      async handler({ params }) {
        const source = await getSource(db, params.id);
        if (!source) throw notFound(ErrorCode.SourceNotFound, 'source', params.id);
        return { status: 200, body: source };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/builds/{id}',
      operationId: 'getBuild',
      summary: 'Read a build',
      tag: 'builds',
      roles: READERS,
      params: BuildParams,
      responses: { 200: { description: 'the build', schema: BuildSchema } },
      errors: [ErrorCode.BuildNotFound],
      async handler({ params }) {
        return { status: 200, body: await buildOr404(params.id) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/builds/{id}/logs',
      operationId: 'getBuildLog',
      summary: 'A build\'s log as text; with follow=true it stays open and streams lines until the build ends',
      tag: 'builds',
      roles: READERS,
      params: BuildParams,
      query: z.strictObject({ follow: z.enum(['true', 'false']).optional() }),
      responses: { 200: { description: 'the log, one line per line', schema: z.string(), contentType: 'text/plain' } },
      errors: [ErrorCode.BuildNotFound],
      async handler({ params, query, res }) {
        await buildOr404(params.id);
        res.status(200).type('text/plain; charset=utf-8');
        let after = 0;
        const sendLines = async (lines: { line: string }[]): Promise<boolean> => {
          for (const l of lines) if (!(await send(res, `${l.line}\n`))) return false;
          return true;
        };
        // Stops as soon as the client has gone; a failure once lines were sent cuts the connection (errorHandler).
        for (;;) {
          const lines = await readBuildLog(db, params.id, after);
          if (!(await sendLines(lines))) return undefined;
          if (lines.length > 0) after = lines[lines.length - 1]!.seq;
          if (lines.length === 1000) continue;
          if (query.follow !== 'true' || gone(res)) break;
          const build = await getBuild(db, params.id);
          if (!build || !ACTIVE.has(build.status)) {
            // Lines written as it ended.
            if (!(await sendLines(await readBuildLog(db, params.id, after)))) return undefined;
            break;
          }
          await pause(res, FOLLOW_POLL_MS);
        }
        res.end();
        return undefined;
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/builds/{id}/cancel',
      operationId: 'cancelBuild',
      summary: 'Cancel a pending or running build; it ends as cancelled and makes no version',
      tag: 'builds',
      roles: AUTHORS,
      params: BuildParams,
      responses: { 202: { description: 'cancelling', schema: BuildSchema } },
      errors: [ErrorCode.BuildNotFound, ErrorCode.BuildNotActive, ErrorCode.DependencyUnavailable],
      async handler({ params }) {
        const build = await buildOr404(params.id);
        if (!ACTIVE.has(build.status)) {
          throw new AppError(ErrorCode.BuildNotActive, `build ${build.id} has already ended (${build.status})`, { status: build.status });
        }
        try {
          await deps.temporal.workflow.getHandle(buildWorkflowId(build.id)).cancel();
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
          // No workflow (it never started, or was terminated): nothing else will end it.
          await endBuild(db, build.id, { status: 'cancelled', message: 'cancelled on request' });
        }
        return { status: 202, body: (await getBuild(db, build.id))! };
      },
    }),
  ];

  async function buildOr404(id: string): Promise<Build> {
    const build = await getBuild(db, id);
    if (!build) throw notFound(ErrorCode.BuildNotFound, 'build', id);
    return build;
  }
}
