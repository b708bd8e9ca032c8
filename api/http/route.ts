import type { Request, Response } from 'express';
import type { z } from 'zod';
import type { Role } from '../../core/db/tokens.js';
import type { ErrorCode } from '../../core/errors.js';

/** Who is calling: the token's name is what runs record as `requestedBy`. */
export interface Principal {
  tokenId: string;
  name: string;
  role: Role;
}

type AnyObject = z.ZodType<Record<string, unknown>>;

/**
 * One HTTP operation, described once: this description validates the request, checks the caller's role,
 * and produces the operation's entry in /openapi.json, so the document cannot drift from the router.
 */
export interface RouteDef<P extends AnyObject | undefined, Q extends AnyObject | undefined, B extends z.ZodType | undefined> {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete';
  /** OpenAPI style: /v1/runs/{id} */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: string;
  /** Roles allowed to call it, or 'public' (no token). */
  roles: readonly Role[] | 'public';
  params?: P;
  query?: Q;
  body?: B;
  /** Honour Idempotency-Key (POSTs that create things). */
  idempotent?: boolean;
  /** The success response(s); a schema of undefined means no body. */
  responses: Record<number, { description: string; schema?: z.ZodType; contentType?: string }>;
  /** Error codes this operation can answer with, besides the ones every route may (documented). */
  errors: readonly ErrorCode[];
  handler(ctx: {
    params: P extends z.ZodType ? z.infer<P> : undefined;
    query: Q extends z.ZodType ? z.infer<Q> : undefined;
    body: B extends z.ZodType ? z.infer<B> : undefined;
    principal: Principal | undefined;
    req: Request;
    res: Response;
  }): Promise<RouteResult | undefined>;
}

/** What a handler answers; undefined means it wrote the response itself (e.g. a stream). */
export interface RouteResult {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

// The handler's argument types are erased in the route table; each definition was checked at defineRoute.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyRoute = RouteDef<any, any, any>;

export function defineRoute<
  P extends AnyObject | undefined = undefined,
  Q extends AnyObject | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
>(def: RouteDef<P, Q, B>): AnyRoute {
  return def;
}

/** `/v1/runs/{id}` → `/v1/runs/:id` */
export const expressPath = (openApiPath: string): string => openApiPath.replace(/\{([A-Za-z0-9_]+)\}/g, ':$1');
