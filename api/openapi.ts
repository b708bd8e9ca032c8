import { OpenAPIRegistry, OpenApiGeneratorV31, extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { ErrorCode } from '../core/errors.js';
import { registerAgentPaths } from './agent/openapi.js';
import { registerNodePaths } from './node/openapi.js';
import { registerSourcePaths } from './sources/openapi.js';
import { StoredSourceSchema } from './template-schemas.js';
import { HTTP_STATUS } from './errors.js';
import type { AnyRoute } from './http/route.js';

extendZodWithOpenApi(z);

const ErrorBodySchema = z
  .object({
    code: z.enum(ErrorCode),
    message: z.string(),
    details: z.record(z.string(), z.unknown()).optional(),
  })
  .openapi('Error');

/** Errors any authenticated route may answer with. */
const COMMON_ERRORS = [ErrorCode.ValidationFailed, ErrorCode.Unauthenticated, ErrorCode.Forbidden, ErrorCode.Internal];
const BODY_ERRORS = [ErrorCode.MalformedJson, ErrorCode.UnsupportedMediaType, ErrorCode.PayloadTooLarge];

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad request', 401: 'Missing, invalid, expired or revoked token', 403: 'The token\'s role may not do this',
  404: 'Not found', 409: 'Conflict', 413: 'Body too large', 415: 'Body is not JSON', 422: 'Unprocessable',
  429: 'Throttled', 500: 'Internal error', 503: 'A dependency is unavailable',
};

/** The OpenAPI 3.1 document of the given routes: generated from the very schemas that validate requests. */
export function openApiDocument(routes: readonly AnyRoute[], version: string): object {
  const registry = new OpenAPIRegistry();
  registerAgentPaths(registry, ErrorBodySchema);
  registerNodePaths(registry, ErrorBodySchema);
  registerSourcePaths(registry, ErrorBodySchema, StoredSourceSchema);
  registry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer', description: 'ggt_… token' });
  for (const route of routes) {
    const codes = new Set<ErrorCode>([...route.errors, ...(route.roles === 'public' ? [] : COMMON_ERRORS), ...(route.body ? BODY_ERRORS : [])]);
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of codes) byStatus.set(HTTP_STATUS[code], [...(byStatus.get(HTTP_STATUS[code]) ?? []), code]);
    const responses: Record<string, object> = {};
    for (const [status, r] of Object.entries(route.responses)) {
      responses[status] = r.schema
        ? { description: r.description, content: { [r.contentType ?? 'application/json']: { schema: r.schema } } }
        : { description: r.description };
    }
    for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
      responses[String(status)] = {
        description: `${STATUS_TEXT[status] ?? 'Error'}: ${list.sort().join(', ')}`,
        content: { 'application/json': { schema: ErrorBodySchema } },
      };
    }
    // The route table erases the schemas' types (AnyRoute); they are zod objects by construction.
    const params = route.params as z.ZodObject | undefined;
    const query = route.query as z.ZodObject | undefined;
    const body = route.body as z.ZodType | undefined;
    registry.registerPath({
      method: route.method,
      path: route.path,
      operationId: route.operationId,
      summary: route.summary,
      ...(route.description ? { description: route.description } : {}),
      tags: [route.tag],
      ...(route.roles === 'public' ? {} : { security: [{ bearer: [] }], 'x-roles': route.roles }),
      request: {
        ...(params ? { params } : {}),
        ...(query ? { query } : {}),
        ...(route.idempotent ? { headers: z.object({ 'Idempotency-Key': z.string().max(200).optional() }) } : {}),
        ...(body ? { body: { required: true, content: { 'application/json': { schema: body } } } } : {}),
      },
      responses,
    });
  }
  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: {
      title: 'Glider Gun API',
      version,
      description: 'Runs deployment templates as stateful deployments. Errors are `{ code, message, details }`.',
    },
    servers: [{ url: '/' }],
  });
}
