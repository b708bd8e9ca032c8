import { Router, type Request, type Response } from 'express';
import type { Db } from '../../core/db/pool.js';
import { parseOrThrow } from '../errors.js';
import { authenticate, authorize } from './auth.js';
import { IDEMPOTENCY_HEADER, withIdempotency } from './idempotency.js';
import { expressPath, type AnyRoute, type Principal, type RouteResult } from './route.js';

function send(res: Response, result: RouteResult): void {
  for (const [name, value] of Object.entries(result.headers ?? {})) res.setHeader(name, value);
  if (result.body === undefined) res.status(result.status).end();
  else res.status(result.status).json(result.body);
}

/** Mounts route definitions on an Express router: authentication, role check, validation, idempotency. */
export function mountRoutes(db: Db, routes: readonly AnyRoute[]): Router {
  const router = Router();
  for (const route of routes) {
    router[route.method](expressPath(route.path), async (req: Request, res: Response) => {
      let principal: Principal | undefined;
      if (route.roles !== 'public') {
        principal = await authenticate(db, req);
        authorize(principal, route.roles, route.summary.charAt(0).toLowerCase() + route.summary.slice(1));
      }
      const params: unknown = route.params ? parseOrThrow(route.params, req.params, 'path') : undefined;
      const query: unknown = route.query ? parseOrThrow(route.query, req.query, 'query') : undefined;
      const body: unknown = route.body ? parseOrThrow(route.body, req.body, 'body') : undefined;
      const handle = async (): Promise<RouteResult> =>
        (await route.handler({ params, query, body, principal, req, res })) ?? { status: res.statusCode };
      const key = req.get(IDEMPOTENCY_HEADER);
      if (route.idempotent && key !== undefined && principal) {
        const result = await withIdempotency(db, { principal: principal.tokenId, key, method: req.method, path: req.path, body: req.body }, handle);
        send(res, result);
        return;
      }
      const result = await route.handler({ params, query, body, principal, req, res });
      if (result) send(res, result);
    });
  }
  return router;
}
