import type { OpenAPIRegistry } from '@asteasolutions/zod-to-openapi';
import { z } from '../zod.js';
import { ActiveRunsBody, AgentBody, EnrolBody, HeartbeatBody, RenewBody } from './routes.js';

const runId = z.object({ runId: z.string() });
const json = (schema: z.ZodType) => ({ required: true, content: { 'application/json': { schema } } });

/**
 * The node API in the OpenAPI document (docs/remote-nodes.md): what a node's worker calls, reached through
 * the node gateway only, which presents its secret and names the node its client certificate names.
 */
export function registerNodePaths(registry: OpenAPIRegistry, errorBody: z.ZodType): void {
  const error = (description: string) => ({ description, content: { 'application/json': { schema: errorBody } } });
  registry.registerComponent('securitySchemes', 'nodeGateway', {
    type: 'apiKey',
    in: 'header',
    name: 'X-Glider-Gateway',
    description: 'The node gateway\'s secret; with it, X-Glider-Node names the node whose client certificate the gateway verified',
  });
  const common = {
    401: error('Not through the gateway, a wrong gateway secret, or no node certificate: NODE_IDENTITY_REQUIRED, UNAUTHENTICATED'),
  };
  const base = { tags: ['node'], security: [{ nodeGateway: [] }] };
  const certified = z.object({ nodeId: z.string(), certificate: z.string(), caCertificate: z.string(), notAfter: z.string() });
  const runOfNode = error('Not an active run of the calling node: RUN_NOT_OF_NODE');
  registry.registerPath({
    ...base,
    method: 'get',
    path: '/v1/gateway/nodes/{id}',
    operationId: 'gatewayGetNodeStatus',
    summary: 'Whether a node may call (active), asked by the gateway on every call a node makes',
    request: { params: z.object({ id: z.string() }) },
    responses: { 200: { description: 'the node\'s status', content: { 'application/json': { schema: z.object({ id: z.string(), status: z.enum(['pending', 'active', 'revoked']) }) } } }, ...common, 404: error('NODE_NOT_FOUND') },
  });
  registry.registerPath({
    ...base,
    method: 'post',
    path: '/v1/node/enrol',
    operationId: 'nodeEnrol',
    summary: 'Enrols a node with its one-time token: signs its CSR for the node the token was made for, and pins its sealing key',
    request: { body: json(EnrolBody) },
    responses: {
      200: { description: 'its client certificate (30 days) and the CA', content: { 'application/json': { schema: certified } } },
      400: error('A CSR that cannot be read or is not ECDSA P-256, or a sealing key that is not X25519 (the token is not spent): CERTIFICATE_REQUEST_INVALID, VALIDATION_FAILED'),
      ...common,
      403: error('The token is unknown, expired or used: ENROLMENT_REFUSED'),
    },
  });
  registry.registerPath({
    ...base,
    method: 'post',
    path: '/v1/node/certificate',
    operationId: 'nodeRenewCertificate',
    summary: 'A new client certificate for the calling node',
    request: { body: json(RenewBody) },
    responses: { 200: { description: 'the certificate', content: { 'application/json': { schema: certified } } }, ...common, 403: error('NODE_REVOKED') },
  });
  registry.registerPath({
    ...base,
    method: 'post',
    path: '/v1/node/heartbeat',
    operationId: 'nodeHeartbeat',
    summary: 'The node\'s version, capacity and the runs it executes; marks it seen',
    request: { body: json(HeartbeatBody) },
    responses: { 200: { description: 'recorded' }, ...common },
  });
  registry.registerPath({
    ...base,
    method: 'post',
    path: '/v1/node/active-runs',
    operationId: 'nodeActiveRuns',
    summary: 'Which of the given runs are active runs of the calling node (what ended runs left may go)',
    request: { body: json(ActiveRunsBody) },
    responses: { 200: { description: 'the active ones', content: { 'application/json': { schema: z.object({ active: z.array(z.string()) }) } } }, ...common },
  });
  registry.registerPath({
    ...base,
    method: 'get',
    path: '/v1/node/runs/{runId}',
    operationId: 'nodeGetRunGrant',
    summary: 'The run\'s grant: what to execute, from the database, with its sensitive values sealed to the node\'s pinned key',
    request: { params: runId },
    responses: {
      200: { description: 'the grant', content: { 'application/json': { schema: z.object({ spec: z.record(z.string(), z.unknown()), secrets: z.record(z.string(), z.string()).optional() }) } } },
      ...common,
      403: error('NODE_REVOKED'),
      404: runOfNode,
    },
  });
  registry.registerPath({
    ...base,
    method: 'put',
    path: '/v1/node/runs/{runId}/agent',
    operationId: 'nodePutRunAgent',
    summary: 'The sha256 of the credential the node\'s relay presents for the run\'s runner',
    request: { params: runId, body: json(AgentBody) },
    responses: { 200: { description: 'recorded' }, ...common, 404: runOfNode },
  });
  registry.registerPath({
    ...base,
    method: 'get',
    path: '/v1/node/runs/{runId}/report',
    operationId: 'nodeGetRunReport',
    summary: 'What the run\'s runner told the agent API: called in, archiving, its result, a refused state',
    request: { params: runId },
    responses: {
      200: { description: 'the report', content: { 'application/json': { schema: z.object({ started: z.boolean(), archiving: z.boolean(), result: z.record(z.string(), z.unknown()).optional(), stateFailure: z.object({ reason: z.string(), message: z.string() }).optional() }) } } },
      ...common,
      404: runOfNode,
    },
  });
}
