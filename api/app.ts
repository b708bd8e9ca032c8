import express, { type Express } from 'express';
import type { ApiDeps } from './deps.js';
import { errorHandler, notFoundRoute, requireJson } from './errors.js';
import { deploymentsRouter } from './routes/deployments.js';
import { healthRouter } from './routes/health.js';
import { templatesRouter } from './routes/templates.js';

export const MAX_BODY_BYTES = 1024 * 1024;

export function createApp(deps: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(healthRouter(deps));
  app.use(requireJson);
  app.use(express.json({ limit: MAX_BODY_BYTES, strict: true, type: 'application/json' }));
  app.use(templatesRouter(deps));
  app.use(deploymentsRouter(deps));
  app.use(notFoundRoute);
  app.use(errorHandler((err, req) => deps.log.error({ err, method: req.method, path: req.path }, 'request failed')));
  return app;
}
