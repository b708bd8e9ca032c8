import { Router } from 'express';
import { addTemplateVersion, createTemplate, getTemplate, getTemplateVersion, listTemplateVersions, listTemplates } from '../../core/db/templates.js';
import { AppError, ErrorCode, notFound } from '../../core/errors.js';
import { checkDeclarations } from '../../core/parameters.js';
import type { ApiDeps } from '../deps.js';
import { parseOrThrow } from '../errors.js';
import { CreateTemplateBody, CreateTemplateVersionBody, Name, VersionNumber } from '../schemas.js';
import { requesterOf } from '../requester.js';

export function templatesRouter(deps: Pick<ApiDeps, 'db'>): Router {
  const { db } = deps;
  const router = Router();

  router.post('/v1/templates', async (req, res) => {
    const body = parseOrThrow(CreateTemplateBody, req.body, 'template');
    res.status(201).json(await createTemplate(db, { ...body, createdBy: requesterOf(req) }));
  });

  router.get('/v1/templates', async (_req, res) => {
    res.json({ items: await listTemplates(db) });
  });

  router.get('/v1/templates/:name', async (req, res) => {
    const name = parseOrThrow(Name, req.params.name, 'template name');
    const template = await getTemplate(db, name);
    if (!template) throw notFound(ErrorCode.TemplateNotFound, 'template', name);
    res.json({ ...template, versions: await listTemplateVersions(db, name) });
  });

  router.post('/v1/templates/:name/versions', async (req, res) => {
    const name = parseOrThrow(Name, req.params.name, 'template name');
    const body = parseOrThrow(CreateTemplateVersionBody, req.body, 'template version');
    const problems = checkDeclarations(body.parameters);
    if (problems.length > 0) {
      throw new AppError(ErrorCode.InvalidParameters, `invalid parameter declarations: ${problems.map((p) => `${p.parameter} ${p.problem}`).join('; ')}`, { problems });
    }
    if (new Set(body.actions).size !== body.actions.length) {
      throw new AppError(ErrorCode.ValidationFailed, 'invalid template version: actions must be distinct');
    }
    res.status(201).json(await addTemplateVersion(db, { templateName: name, ...body, createdBy: requesterOf(req) }));
  });

  router.get('/v1/templates/:name/versions/:version', async (req, res) => {
    const name = parseOrThrow(Name, req.params.name, 'template name');
    const version = parseOrThrow(VersionNumber, req.params.version, 'version');
    const found = await getTemplateVersion(db, name, version);
    if (!found) throw notFound(ErrorCode.TemplateVersionNotFound, 'template version', `${name}@${version}`);
    res.json(found);
  });

  return router;
}
