import type { OpenAPIRegistry } from '@asteasolutions/zod-to-openapi';
import { z } from '../zod.js';
import { LOG_FRAMES_TYPE } from './log-frames.js';
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
    description:
      'A node\'s run is served through the node gateway only, for its node. For a node\'s run that has already ended (its node came back late), only this call is taken: the state is stored set apart (`quarantine`), never current, until an operator promotes it with a rollback.',
    request: { params: runId, body: { required: true, content: { 'application/gzip': { schema: z.string().openapi({ format: 'binary' }) } } } },
    responses: {
      200: {
        description: 'the state version written',
        content: { 'application/json': { schema: z.object({ version: z.number().int(), sha256: z.string(), sizeBytes: z.number().int(), quarantine: z.string().optional() }) } },
      },
      ...common,
      415: error('Not application/gzip: UNSUPPORTED_MEDIA_TYPE'),
    },
  });
  const storedBytes = z
    .record(z.string(), z.number().int())
    .openapi({ description: 'bytes stored of each stream of the run (a stream not listed has none)', example: { stdout: 1024, stderr: 0 } });
  registry.registerPath({
    ...base,
    method: 'post',
    path: '/v1/agent/runs/{runId}/log-frames',
    operationId: 'agentPostLogFrames',
    summary: 'Log bytes (already masked) of every stream, in the order they were read; stored in that order, all or none, exactly once by offset',
    description:
      `The body is a sequence of frames, each (big-endian) \`[u16 stream name length][stream name][u64 offset][u32 data length][data]\`: the stream is \`stdout\`, \`stderr\` or \`file:<name>\`, the offset is where data starts in that stream. ` +
      'The frames are stored in their order (so the combined log keeps the writing order across streams), in one transaction: bytes a stream already holds are skipped, so a retried call is harmless. ' +
      'A frame that starts past what its stream holds refuses the whole call with 409, listing what every stream holds.',
    request: {
      params: runId,
      body: { required: true, content: { [LOG_FRAMES_TYPE]: { schema: z.string().openapi({ format: 'binary' }) } } },
    },
    responses: {
      204: { description: 'every frame stored (or already stored)' },
      400: error('A frame cut short, a bad stream name or offset, or no frame at all: VALIDATION_FAILED (the message names the frame and its byte)'),
      ...common,
      409: {
        description: 'A frame starts past what its stream holds; nothing was stored: resend each stream from `storedBytes`: LOG_OFFSET_MISMATCH',
        content: {
          'application/json': {
            schema: z.object({ code: z.literal('LOG_OFFSET_MISMATCH'), message: z.string(), storedBytes, details: z.object({ stream: z.string(), storedBytes }) }),
          },
        },
      },
      413: error('Over the run\'s log cap (`details.stream` names the stream), or a body over 8 MiB: PAYLOAD_TOO_LARGE'),
      415: error(`Not ${LOG_FRAMES_TYPE}: UNSUPPORTED_MEDIA_TYPE`),
    },
  });
  registry.registerPath({
    ...base,
    method: 'post',
    path: '/v1/agent/runs/{runId}/result',
    operationId: 'agentPostResult',
    summary: 'The pod-runner\'s report: exit code, outputs and warnings; the first one counts',
    request: { params: runId, body: { required: true, content: { 'application/json': { schema: AgentResultSchema } } } },
    responses: {
      204: { description: 'recorded, with the state version this run archived (if any) whatever the report says' },
      400: error('Invalid report, or a `stateVersion` other than the one this run archived (not recorded): VALIDATION_FAILED'),
      ...common,
    },
  });
}
