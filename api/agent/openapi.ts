import type { OpenAPIRegistry } from '@asteasolutions/zod-to-openapi';
import { z } from '../zod.js';
import { AgentResultSchema } from './routes.js';

const runId = z.object({ runId: z.string() });

/** The agent API in the OpenAPI document: the pod-runner's side of a Kubernetes run (infra/images/pod-runner). */
export function registerAgentPaths(registry: OpenAPIRegistry, errorBody: z.ZodType): void {
  const error = (description: string) => ({ description, content: { 'application/json': { schema: errorBody } } });
  const common = { 401: error('Missing credential, or not valid for this run, or the run has ended: UNAUTHENTICATED') };
  registry.registerComponent('securitySchemes', 'runCredential', {
    type: 'http',
    scheme: 'bearer',
    description: 'ggr_… credential of one run, valid while that run is active (given to its pod in a Secret)',
  });
  const base = { tags: ['agent'], security: [{ runCredential: [] }] };
  registry.registerPath({
    ...base,
    method: 'get',
    path: '/v1/agent/runs/{runId}/state',
    operationId: 'agentGetState',
    summary: 'The state archive (tar+gzip) to restore into /state before the template starts',
    request: { params: runId },
    responses: {
      200: { description: 'the archive', content: { 'application/gzip': { schema: z.string().openapi({ format: 'binary' }) } } },
      204: { description: 'nothing to restore (the deployment\'s first run)' },
      ...common,
    },
  });
  registry.registerPath({
    ...base,
    method: 'get',
    path: '/v1/agent/runs/{runId}/template',
    operationId: 'agentGetTemplateFiles',
    summary: 'An ad-hoc template\'s files (tar+gzip), to unpack at /template before the template starts',
    request: { params: runId },
    responses: {
      200: { description: 'the files', content: { 'application/gzip': { schema: z.string().openapi({ format: 'binary' }) } } },
      ...common,
      404: error('The template is not ad-hoc: SOURCE_NOT_FOUND'),
    },
  });
  registry.registerPath({
    ...base,
    method: 'put',
    path: '/v1/agent/runs/{runId}/state',
    operationId: 'agentPutState',
    summary: 'Stores /state as archived after the template ended; idempotent per run',
    request: { params: runId, body: { required: true, content: { 'application/gzip': { schema: z.string().openapi({ format: 'binary' }) } } } },
    responses: {
      200: {
        description: 'the state version written',
        content: { 'application/json': { schema: z.object({ version: z.number().int(), sha256: z.string(), sizeBytes: z.number().int() }) } },
      },
      ...common,
      415: error('Not application/gzip: UNSUPPORTED_MEDIA_TYPE'),
    },
  });
  registry.registerPath({
    ...base,
    method: 'put',
    path: '/v1/agent/runs/{runId}/logs',
    operationId: 'agentPutLog',
    summary: 'Log bytes (already masked) of one stream at a byte offset; exactly once however often retried',
    request: {
      params: runId,
      query: z.object({ stream: z.string().openapi({ example: 'stdout' }), offset: z.string().openapi({ example: '0' }) }),
      body: { required: true, content: { 'application/octet-stream': { schema: z.string().openapi({ format: 'binary' }) } } },
    },
    responses: {
      204: { description: 'stored (or already stored)' },
      400: error('Bad stream name or offset: VALIDATION_FAILED'),
      ...common,
      409: error('The offset is past what is stored; resend from `storedBytes`: LOG_OFFSET_MISMATCH'),
      413: error('Over the run\'s log cap: PAYLOAD_TOO_LARGE'),
    },
  });
  registry.registerPath({
    ...base,
    method: 'post',
    path: '/v1/agent/runs/{runId}/result',
    operationId: 'agentPostResult',
    summary: 'The pod-runner\'s report: exit code, outputs, warnings and the archived state version; the first one counts',
    request: { params: runId, body: { required: true, content: { 'application/json': { schema: AgentResultSchema } } } },
    responses: { 204: { description: 'recorded' }, 400: error('Invalid report: VALIDATION_FAILED'), ...common },
  });
}
