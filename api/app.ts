import { createRequire } from 'node:module';
import path from 'node:path';
import express, { type Express } from 'express';
import { agentRouter } from './agent/routes.js';
import { nodeRouter } from './node/routes.js';
import { sourceRouter } from './sources/routes.js';
import type { ApiDeps } from './deps.js';
import { errorHandler, notFoundRoute, requireJson } from './errors.js';
import { mountRoutes } from './http/mount.js';
import { defineRoute, type AnyRoute } from './http/route.js';
import { openApiDocument } from './openapi.js';
import { deploymentRoutes } from './routes/deployments.js';
import { healthRoutes } from './routes/health.js';
import { runRoutes } from './routes/runs.js';
import { stateRoutes } from './routes/state.js';
import { templateRoutes } from './routes/templates.js';
import { templateTypeRoutes } from './routes/template-types.js';
import { buildRoutes } from './routes/builds.js';
import { tokenRoutes } from './routes/tokens.js';
import { nodeRoutes } from './routes/nodes.js';
import { z } from './zod.js';

export const MAX_BODY_BYTES = 1024 * 1024;

export function apiRoutes(deps: ApiDeps, document: () => object): AnyRoute[] {
  return [
    ...specRoutes(document),
    ...healthRoutes(deps),
    ...tokenRoutes(deps),
    ...templateTypeRoutes(deps),
    ...templateRoutes(deps),
    ...buildRoutes(deps),
    ...deploymentRoutes(deps),
    ...runRoutes(deps),
    ...stateRoutes(deps),
    ...nodeRoutes(deps),
  ];
}

const swaggerUiDir = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

const DOCS_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Glider Gun API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div><script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({ url: '/openapi.json', dom_id: '#ui' });</script></body></html>`;

/** The API's self-description: the document and a page to browse it. */
function specRoutes(document: () => object): AnyRoute[] {
  return [
    defineRoute({
      method: 'get',
      path: '/openapi.json',
      operationId: 'getOpenApiDocument',
      summary: 'This API described as OpenAPI 3.1',
      tag: 'system',
      roles: 'public',
      responses: { 200: { description: 'the OpenAPI document', schema: z.record(z.string(), z.unknown()) } },
      errors: [],
      handler: () => Promise.resolve({ status: 200, body: document() }),
    }),
    defineRoute({
      method: 'get',
      path: '/docs',
      operationId: 'getApiDocsPage',
      summary: 'A page to browse and try this API (Swagger UI)',
      tag: 'system',
      roles: 'public',
      responses: { 200: { description: 'HTML', schema: z.string(), contentType: 'text/html' } },
      errors: [],
      handler: ({ res }) => {
        res.type('html').send(DOCS_PAGE);
        return Promise.resolve(undefined);
      },
    }),
  ];
}

export function createApp(deps: ApiDeps): Express {
  // The document describes the routes, one of which serves it: the closure runs only on a request.
  const routes = apiRoutes(deps, () => document);
  const document = openApiDocument(routes, deps.version);
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use('/docs/assets', express.static(swaggerUiDir, { index: false }));
  // Run agents send raw bodies (archives, log bytes) with their own credential: before the JSON-only rule.
  app.use(
    agentRouter({
      db: deps.db,
      secrets: deps.secrets,
      state: deps.state,
      logMaxBytes: deps.logMaxBytes ?? Number.MAX_SAFE_INTEGER,
      gatewaySecret: deps.nodes.gatewaySecret,
    }),
  );
  // Nodes' calls come through the gateway, which vouches for the node (api/node/gateway-auth.ts).
  app.use(
    nodeRouter({
      db: deps.db,
      secrets: deps.secrets,
      ca: deps.nodes.ca,
      gatewaySecret: deps.nodes.gatewaySecret,
      certificateDays: deps.nodes.certificateDays,
      runs: deps.nodes.runs,
    }),
  );
  app.use(sourceRouter({ db: deps.db, uploadMaxBytes: deps.builds.uploadMaxBytes }));
  app.use(requireJson);
  app.use(express.json({ limit: MAX_BODY_BYTES, strict: true, type: 'application/json' }));
  app.use(mountRoutes(deps.db, routes));
  app.use(notFoundRoute);
  app.use(errorHandler((err, req) => deps.log.error({ err, method: req.method, path: req.path }, 'request failed')));
  return app;
}
