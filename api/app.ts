import { createRequire } from 'node:module';
import path from 'node:path';
import express, { type Express } from 'express';
import type { ApiDeps } from './deps.js';
import { errorHandler, notFoundRoute, requireJson } from './errors.js';
import { mountRoutes } from './http/mount.js';
import type { AnyRoute } from './http/route.js';
import { openApiDocument } from './openapi.js';
import { deploymentRoutes } from './routes/deployments.js';
import { healthRoutes } from './routes/health.js';
import { runRoutes } from './routes/runs.js';
import { templateRoutes } from './routes/templates.js';
import { tokenRoutes } from './routes/tokens.js';

export const MAX_BODY_BYTES = 1024 * 1024;

export function apiRoutes(deps: ApiDeps): AnyRoute[] {
  return [...healthRoutes(deps), ...tokenRoutes(deps), ...templateRoutes(deps), ...deploymentRoutes(deps), ...runRoutes(deps)];
}

const swaggerUiDir = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

const DOCS_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Glider Gun API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div><script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body></html>`;

export function createApp(deps: ApiDeps): Express {
  const routes = apiRoutes(deps);
  const document = openApiDocument(routes, deps.version);
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.get('/openapi.json', (_req, res) => {
    res.json(document);
  });
  app.get('/docs', (_req, res) => {
    res.type('html').send(DOCS_PAGE);
  });
  app.get('/docs/init.js', (_req, res) => {
    res.type('js').send(`SwaggerUIBundle({ url: '/openapi.json', dom_id: '#ui' });`);
  });
  app.use('/docs/assets', express.static(swaggerUiDir, { index: false }));
  app.use(requireJson);
  app.use(express.json({ limit: MAX_BODY_BYTES, strict: true, type: 'application/json' }));
  app.use(mountRoutes(deps.db, routes));
  app.use(notFoundRoute);
  app.use(errorHandler((err, req) => deps.log.error({ err, method: req.method, path: req.path }, 'request failed')));
  return app;
}
