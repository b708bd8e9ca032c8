import { Router } from 'express';
import { getDeployment, insertDeployment, listDeployments, type Deployment } from '../../core/db/deployments.js';
import type { Db } from '../../core/db/pool.js';
import { getRun, insertRun, listRuns, runSummary } from '../../core/db/runs.js';
import { getTemplateVersion, getTemplate } from '../../core/db/templates.js';
import { newId } from '../../core/ids.js';
import { AppError, ErrorCode, notFound } from '../../core/errors.js';
import { resolveParameters } from '../../core/parameters.js';
import type { ApiDeps } from '../deps.js';
import { dispatchRun } from '../dispatch.js';
import { parseOrThrow } from '../errors.js';
import { requesterOf } from '../requester.js';
import {
  CreateDeploymentBody,
  CreateRunBody,
  DeploymentId,
  ListDeploymentsQuery,
  ListRunsQuery,
  RunId,
  decodeCursor,
  encodeCursor,
} from '../schemas.js';

async function nodeExists(db: Db, id: string): Promise<boolean> {
  const { rowCount } = await db.query('SELECT 1 FROM nodes WHERE id = $1', [id]);
  return rowCount === 1;
}

async function deploymentView(db: Db, d: Deployment) {
  const last = d.lastRunId ? await getRun(db, d.lastRunId) : undefined;
  const active = last && ['pending', 'running', 'cancelling'].includes(last.status) ? last : undefined;
  return { ...d, activeRun: active ? runSummary(active) : null, lastRun: last ? runSummary(last) : null };
}

function cursorOrThrow(cursor: string | undefined): number | undefined {
  const seq = decodeCursor(cursor);
  if (seq === null) throw new AppError(ErrorCode.ValidationFailed, 'invalid cursor: use the nextCursor of a previous page');
  return seq;
}

export function deploymentsRouter(deps: ApiDeps): Router {
  const { db } = deps;
  const router = Router();

  const loadDeployment = async (rawId: unknown): Promise<Deployment> => {
    const id = parseOrThrow(DeploymentId, rawId, 'deployment id');
    const d = await getDeployment(db, id);
    if (!d) throw notFound(ErrorCode.DeploymentNotFound, 'deployment', id);
    return d;
  };

  router.post('/v1/deployments', async (req, res) => {
    const body = parseOrThrow(CreateDeploymentBody, req.body, 'deployment');
    const template = await getTemplate(db, body.template.name);
    if (!template) throw notFound(ErrorCode.TemplateNotFound, 'template', body.template.name);
    const versionNumber = body.template.version ?? template.latestVersion;
    const version = versionNumber ? await getTemplateVersion(db, template.name, versionNumber) : undefined;
    if (!version) {
      throw notFound(ErrorCode.TemplateVersionNotFound, 'template version', `${template.name}@${versionNumber ?? 'latest'}`);
    }
    if (body.target.kind === 'cluster' && !deps.kubernetesEnabled) {
      throw new AppError(ErrorCode.TargetUnavailable, 'this installation has no Kubernetes execution configured; target a node instead', { target: body.target });
    }
    if (body.target.kind === 'node' && !(await nodeExists(db, body.target.node))) {
      throw notFound(ErrorCode.NodeNotFound, 'node', body.target.node);
    }
    const parameters = resolveParameters(version.parameters, body.parameters);
    if (!parameters.ok) {
      throw new AppError(
        ErrorCode.InvalidParameters,
        `parameters do not match ${template.name}@${version.version}: ${parameters.problems.map((p) => `${p.parameter} ${p.problem}`).join('; ')}`,
        { problems: parameters.problems },
      );
    }
    const created = await insertDeployment(db, {
      id: newId('dep'),
      name: body.name,
      template: { name: template.name, version: version.version },
      parameters: parameters.values,
      target: body.target,
      createdBy: requesterOf(req),
    });
    res.status(201).json(await deploymentView(db, created));
  });

  router.get('/v1/deployments', async (req, res) => {
    const q = parseOrThrow(ListDeploymentsQuery, req.query, 'query');
    const page = await listDeployments(db, { ...q, afterSeq: cursorOrThrow(q.cursor) });
    const items = await Promise.all(page.items.map((d) => deploymentView(db, d)));
    res.json({ items, nextCursor: encodeCursor(page.nextSeq) });
  });

  router.get('/v1/deployments/:id', async (req, res) => {
    res.json(await deploymentView(db, await loadDeployment(req.params.id)));
  });

  router.post('/v1/deployments/:id/runs', async (req, res) => {
    const deployment = await loadDeployment(req.params.id);
    const body = parseOrThrow(CreateRunBody, req.body, 'run');
    const version = await getTemplateVersion(db, deployment.template.name, deployment.template.version);
    if (!version?.actions.includes(body.action)) {
      throw new AppError(
        ErrorCode.UnknownAction,
        `${deployment.template.name}@${deployment.template.version} has no action '${body.action}'; it supports: ${version?.actions.join(', ')}`,
        { action: body.action, supported: version?.actions ?? [] },
      );
    }
    const run = await insertRun(db, { id: newId('run'), deploymentId: deployment.id, action: body.action, requestedBy: requesterOf(req) });
    res.status(202).location(`/v1/runs/${run.id}`).json(await dispatchRun(deps, deployment, run));
  });

  router.get('/v1/deployments/:id/runs', async (req, res) => {
    const deployment = await loadDeployment(req.params.id);
    const q = parseOrThrow(ListRunsQuery, req.query, 'query');
    const page = await listRuns(db, deployment.id, { limit: q.limit, beforeSeq: cursorOrThrow(q.cursor) });
    res.json({ items: page.items, nextCursor: encodeCursor(page.nextSeq) });
  });

  router.get('/v1/runs/:id', async (req, res) => {
    const id = parseOrThrow(RunId, req.params.id, 'run id');
    const run = await getRun(db, id);
    if (!run) throw notFound(ErrorCode.RunNotFound, 'run', id);
    res.json(run);
  });

  return router;
}
