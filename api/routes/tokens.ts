import { createToken, getToken, listTokens, revokeToken } from '../../core/db/tokens.js';
import { ErrorCode, notFound } from '../../core/errors.js';
import type { ApiDeps } from '../deps.js';
import { defineRoute, type AnyRoute } from '../http/route.js';
import { CreateTokenBody, CreatedTokenSchema, TokenParams, TokenSchema } from '../schemas.js';
import { z } from '../zod.js';
import { ADMINS } from '../http/roles.js';


export function tokenRoutes(deps: Pick<ApiDeps, 'db'>): AnyRoute[] {
  const { db } = deps;
  return [
    defineRoute({
      method: 'post',
      path: '/v1/tokens',
      operationId: 'createToken',
      summary: 'Create an API token with a role',
      description: 'The token is in this response only; Glider Gun keeps a hash of it.',
      tag: 'tokens',
      roles: ADMINS,
      body: CreateTokenBody,
      responses: { 201: { description: 'created', schema: CreatedTokenSchema } },
      errors: [ErrorCode.TokenExists],
      async handler({ body, principal }) {
        const expiresAt = body.expiresInSeconds ? new Date(Date.now() + body.expiresInSeconds * 1000) : undefined;
        const { token, secret } = await createToken(db, { name: body.name, role: body.role, createdBy: principal!.name, expiresAt });
        return { status: 201, headers: { 'cache-control': 'no-store' }, body: { ...token, token: secret } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/tokens',
      operationId: 'listTokens',
      summary: 'List API tokens (never their secrets)',
      tag: 'tokens',
      roles: ADMINS,
      responses: { 200: { description: 'every token, revoked ones included', schema: z.object({ items: z.array(TokenSchema) }) } },
      errors: [],
      async handler() {
        return { status: 200, body: { items: await listTokens(db) } };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/tokens/{id}/revoke',
      operationId: 'revokeToken',
      summary: 'Revoke an API token',
      description: 'Takes effect at once. Revoking a revoked token changes nothing.',
      tag: 'tokens',
      roles: ADMINS,
      params: TokenParams,
      responses: { 200: { description: 'the revoked token', schema: TokenSchema } },
      errors: [ErrorCode.TokenNotFound],
      async handler({ params, principal }) {
        if (!(await getToken(db, params.id))) throw notFound(ErrorCode.TokenNotFound, 'token', params.id);
        return { status: 200, body: await revokeToken(db, params.id, principal!.name) };
      },
    }),
  ];
}
