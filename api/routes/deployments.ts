import { getDeployment, getSealedSecrets, insertDeployment, listDeployments, purgeDeployment, upgradeDeployment, type Deployment } from '../../core/db/deployments.js';
import { deploymentWorkflowId } from '../../workflows/messages.js';
import type { Db } from '../../core/db/pool.js';
import { getRun, getRuns, runSummary, type Run } from '../../core/db/runs.js';
import { getTemplate, getTemplateVersion } from '../../core/db/templates.js';
import { reclaimStateSpace } from '../../core/db/state.js';
import { AppError, ErrorCode, notFound } from '../../core/errors.js';
import { newId } from '../../core/ids.js';
import { resolveParameters } from '../../core/parameters.js';
import type { ApiDeps } from '../deps.js';
import { checkTimeout } from './templates.js';
import { defineRoute, type AnyRoute } from '../http/route.js';
import { CreateDeploymentBody, UpgradeDeploymentBody, CursorPage, DeploymentParams, DeploymentSchema, ListDeploymentsQuery, decodeCursor, encodeCursor } from '../schemas.js';
import { OPERATORS, READERS } from '../http/roles.js';


async function nodeExists(db: Db, id: string): Promise<boolean> {
  const { rowCount } = await db.query('SELECT 1 FROM nodes WHERE id = $1', [id]);
  return rowCount === 1;
}

export async function deploymentView(db: Db, d: Deployment) {
  return viewWithLastRun(d, d.lastRunId ? await getRun(db, d.lastRunId) : undefined);
}

function viewWithLastRun(d: Deployment, last: Run | undefined) {
  const active = last && ['pending', 'running', 'cancelling'].includes(last.status) ? last : undefined;
  const { lastRunId: _omit, ...rest } = d;
  return { ...rest, activeRun: active ? runSummary(active) : null, lastRun: last ? runSummary(last) : null };
}

export function cursorOrThrow(cursor: string | undefined): number | undefined {
  const seq = decodeCursor(cursor);
  if (seq === null) throw new AppError(ErrorCode.ValidationFailed, 'invalid cursor: use the nextCursor of a previous page');
  return seq;
}

export async function loadDeployment(db: Db, id: string): Promise<Deployment> {
  const d = await getDeployment(db, id);
  if (!d) throw notFound(ErrorCode.DeploymentNotFound, 'deployment', id);
  return d;
}

export function deploymentRoutes(deps: ApiDeps): AnyRoute[] {
  const { db } = deps;
  return [
    defineRoute({
      method: 'post',
      path: '/v1/deployments',
      operationId: 'createDeployment',
      summary: 'Create a deployment of a template version',
      description:
        'Pins the given (default: latest) template version. Parameters are validated against its declarations and defaults filled in; values of sensitive parameters are encrypted at rest and never returned.',
      tag: 'deployments',
      roles: OPERATORS,
      body: CreateDeploymentBody,
      idempotent: true,
      responses: { 201: { description: 'created', schema: DeploymentSchema } },
      errors: [
        ErrorCode.TemplateNotFound,
        ErrorCode.TemplateVersionNotFound,
        ErrorCode.NodeNotFound,
        ErrorCode.InvalidParameters,
        ErrorCode.TargetUnavailable,
        ErrorCode.LimitExceeded,
        ErrorCode.IdempotencyKeyReused,
        ErrorCode.IdempotencyKeyInUse,
      ],
      async handler({ body, principal }) {
        const template = await getTemplate(db, body.template.name);
        if (!template) throw notFound(ErrorCode.TemplateNotFound, 'template', body.template.name);
        const versionNumber = body.template.version ?? template.latestVersion;
        const version = versionNumber ? await getTemplateVersion(db, template.name, versionNumber) : undefined;
        if (!version) {
          throw notFound(ErrorCode.TemplateVersionNotFound, 'template version', `${template.name}@${versionNumber ?? 'latest'}`);
        }
        if (body.target.kind === 'cluster' && !deps.kubernetesEnabled) {
          throw new AppError(ErrorCode.TargetUnavailable, 'this installation has no Kubernetes execution configured; target a node instead', {
            target: body.target,
          });
        }
        if (body.target.kind === 'node' && !(await nodeExists(db, body.target.node))) throw notFound(ErrorCode.NodeNotFound, 'node', body.target.node);
        const resolved = resolveParameters(version.parameters, body.parameters);
        if (!resolved.ok) {
          throw new AppError(
            ErrorCode.InvalidParameters,
            `parameters do not match ${template.name}@${version.version}: ${resolved.problems.map((p) => `${p.parameter} ${p.problem}`).join('; ')}`,
            { problems: resolved.problems },
          );
        }
        checkTimeout(body.limits, deps.maxRunTimeoutSeconds);
        const sensitive = new Set(version.parameters.filter((p) => p.sensitive).map((p) => p.name));
        const plain = Object.fromEntries(Object.entries(resolved.values).filter(([k]) => !sensitive.has(k)));
        const secret = Object.fromEntries(Object.entries(resolved.values).filter(([k]) => sensitive.has(k)));
        const id = newId('dep');
        const created = await insertDeployment(db, {
          id,
          name: body.name,
          template: { name: template.name, version: version.version },
          parameters: plain,
          sensitiveParameters: Object.keys(secret).sort(),
          // Bound to the deployment id, so a blob copied to another row does not decrypt.
          sealedSecrets: Object.keys(secret).length > 0 ? deps.secrets.seal(Buffer.from(JSON.stringify(secret)), id) : null,
          target: body.target,
          limits: body.limits,
          createdBy: principal!.name,
        });
        return { status: 201, headers: { location: `/v1/deployments/${id}` }, body: await deploymentView(db, created) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/deployments',
      operationId: 'listDeployments',
      summary: 'List deployments, oldest first, filtered and paged',
      tag: 'deployments',
      roles: READERS,
      query: ListDeploymentsQuery,
      responses: { 200: { description: 'a page; pass nextCursor as cursor for the next', schema: CursorPage(DeploymentSchema, 'DeploymentPage') } },
      errors: [],
      async handler({ query }) {
        const page = await listDeployments(db, { ...query, afterSeq: cursorOrThrow(query.cursor) });
        // The page's last runs in one query, not one per deployment.
        const lastRuns = await getRuns(db, page.items.flatMap((d) => (d.lastRunId ? [d.lastRunId] : [])));
        const items = page.items.map((d) => viewWithLastRun(d, d.lastRunId ? lastRuns.get(d.lastRunId) : undefined));
        return { status: 200, body: { items, nextCursor: encodeCursor(page.nextSeq) } };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/v1/deployments/{id}',
      operationId: 'purgeDeployment',
      summary: 'Purge a deployment with its runs, logs, state versions and secrets',
      description: 'Refused while a run is active (cancel it first). What the deployment created outside Glider Gun is not touched: run `destroy` first.',
      tag: 'deployments',
      roles: OPERATORS,
      params: DeploymentParams,
      responses: { 204: { description: 'purged' } },
      errors: [ErrorCode.DeploymentNotFound, ErrorCode.RunInProgress],
      async handler({ params }) {
        const result = await purgeDeployment(db, params.id);
        if (result === 'not-found') throw notFound(ErrorCode.DeploymentNotFound, 'deployment', params.id);
        if (result === 'run-active') {
          throw new AppError(ErrorCode.RunInProgress, `deployment '${params.id}' has an active run; cancel it or wait for it to end`, { deploymentId: params.id });
        }
        // Its workflow is idle; end it. If Temporal is unreachable it stays idle and harmless: its id can't be reused.
        await deps.temporal.workflow
          .getHandle(deploymentWorkflowId(params.id))
          .terminate('deployment purged')
          .catch(() => undefined);
        // Its state's space is reusable by the time the purge answers (docs/operators-guide.md, "Disk space").
        await reclaimStateSpace(db).catch((err: unknown) => deps.log.warn({ err }, 'could not reclaim the space of purged state versions'));
        return { status: 204 };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/deployments/{id}/upgrade',
      operationId: 'upgradeDeployment',
      summary: 'Move a deployment to another version of its template (the latest by default)',
      description:
        'A deployment stays on the version it was created with until upgraded. Its parameters (the given ones, else its current values, sensitive ones included) are validated against the new version; nothing changes if they do not fit. Refused while a run is active.',
      tag: 'deployments',
      roles: OPERATORS,
      params: DeploymentParams,
      body: UpgradeDeploymentBody,
      responses: { 200: { description: 'upgraded; the next run uses the new version', schema: DeploymentSchema } },
      errors: [ErrorCode.DeploymentNotFound, ErrorCode.TemplateVersionNotFound, ErrorCode.InvalidParameters, ErrorCode.RunInProgress],
      async handler({ params, body }) {
        const deployment = await loadDeployment(db, params.id);
        const template = await getTemplate(db, deployment.template.name);
        const versionNumber = body.version ?? template?.latestVersion;
        const version = versionNumber ? await getTemplateVersion(db, deployment.template.name, versionNumber) : undefined;
        if (!version) throw notFound(ErrorCode.TemplateVersionNotFound, 'template version', `${deployment.template.name}@${versionNumber ?? 'latest'}`);
        let values = body.parameters;
        if (!values) {
          const sealed = await getSealedSecrets(db, deployment.id);
          const secrets = sealed ? (JSON.parse(deps.secrets.open(sealed, deployment.id).toString('utf8')) as Record<string, unknown>) : {};
          values = { ...deployment.parameters, ...secrets };
        }
        const resolved = resolveParameters(version.parameters, values);
        if (!resolved.ok) {
          throw new AppError(
            ErrorCode.InvalidParameters,
            `parameters do not match ${deployment.template.name}@${version.version}: ${resolved.problems.map((p) => `${p.parameter} ${p.problem}`).join('; ')}`,
            { problems: resolved.problems },
          );
        }
        const sensitive = new Set(version.parameters.filter((p) => p.sensitive).map((p) => p.name));
        const secret = Object.fromEntries(Object.entries(resolved.values).filter(([k]) => sensitive.has(k)));
        const result = await upgradeDeployment(db, deployment.id, {
          version: version.version,
          parameters: Object.fromEntries(Object.entries(resolved.values).filter(([k]) => !sensitive.has(k))),
          sensitiveParameters: Object.keys(secret).sort(),
          sealedSecrets: Object.keys(secret).length > 0 ? deps.secrets.seal(Buffer.from(JSON.stringify(secret)), deployment.id) : null,
        });
        if (result === 'not-found') throw notFound(ErrorCode.DeploymentNotFound, 'deployment', params.id);
        if (result === 'run-active') {
          throw new AppError(ErrorCode.RunInProgress, `deployment '${params.id}' has an active run; it keeps its version until the run ends`, { deploymentId: params.id });
        }
        return { status: 200, body: await deploymentView(db, result) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/deployments/{id}',
      operationId: 'getDeployment',
      summary: 'Read a deployment with its active and last run',
      tag: 'deployments',
      roles: READERS,
      params: DeploymentParams,
      responses: { 200: { description: 'the deployment', schema: DeploymentSchema } },
      errors: [ErrorCode.DeploymentNotFound],
      async handler({ params }) {
        return { status: 200, body: await deploymentView(db, await loadDeployment(db, params.id)) };
      },
    }),
  ];
}
