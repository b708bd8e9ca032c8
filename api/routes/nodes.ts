import { activeRunsOfNode, createNode, getNode, listNodes, reissueEnrolment, revokeNode, type Node } from '../../core/db/nodes.js';
import { ErrorCode, notFound } from '../../core/errors.js';
import { signalNodeRevoked } from '../dispatch.js';
import type { ApiDeps } from '../deps.js';
import { ADMINS, READERS } from '../http/roles.js';
import { defineRoute, type AnyRoute } from '../http/route.js';
import { CreateNodeBody, CreatedNodeSchema, NodeEnrolmentSchema, NodeParams, NodeSchema } from '../schemas.js';
import { z } from '../zod.js';

/** A node that called within this long is online: it heartbeats every 30 s, and the gateway notes every call. */
const ONLINE_WITHIN_MS = 90_000;

function connectionOf(node: Node): 'online' | 'offline' | 'never-seen' | 'revoked' {
  if (node.status === 'revoked') return 'revoked';
  if (!node.lastSeenAt) return 'never-seen';
  return Date.now() - Date.parse(node.lastSeenAt) <= ONLINE_WITHIN_MS ? 'online' : 'offline';
}

const view = (node: Node, activeRuns: string[]) => {
  const { sealingPublicKey: _key, ...shown } = node;
  return { ...shown, connection: connectionOf(node), activeRuns };
};

export function nodeRoutes(deps: Pick<ApiDeps, 'db' | 'temporal' | 'nodes'>): AnyRoute[] {
  const { db, nodes } = deps;
  const enrolment = (e: { token: string; expiresAt: string }) => ({ token: e.token, expiresAt: e.expiresAt, gateway: nodes.gatewayAddress, caCertificate: nodes.ca.certPem });
  return [
    defineRoute({
      method: 'post',
      path: '/v1/nodes',
      operationId: 'createNode',
      summary: 'Create a node and its one-time enrolment token',
      description:
        'The node enrols with the token (`npm run node-worker -- enrol`, docs/operators-guide.md): it makes its keys itself and sends a CSR; the token works once and expires (GLIDERGUN_NODE_ENROLMENT_SECONDS, an hour by default). Glider Gun keeps only a hash of it.',
      tag: 'nodes',
      roles: ADMINS,
      body: CreateNodeBody,
      idempotent: true,
      responses: { 201: { description: 'created; the token is in this response only', schema: CreatedNodeSchema } },
      errors: [ErrorCode.NodeExists],
      async handler({ body, principal }) {
        const made = await createNode(db, { id: body.name, description: body.description, labels: body.labels, createdBy: principal!.name, enrolmentSeconds: nodes.enrolmentSeconds });
        return { status: 201, headers: { 'cache-control': 'no-store' }, body: { node: view(made.node, []), enrolment: enrolment(made) } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/nodes',
      operationId: 'listNodes',
      summary: 'List nodes: online, offline or revoked, last seen, version, capacity and active runs',
      tag: 'nodes',
      roles: READERS,
      responses: { 200: { description: 'every node', schema: z.object({ items: z.array(NodeSchema) }) } },
      errors: [],
      async handler() {
        return { status: 200, body: { items: (await listNodes(db)).map(({ activeRuns, ...n }) => view(n, activeRuns)) } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/nodes/{id}',
      operationId: 'getNode',
      summary: 'One node',
      tag: 'nodes',
      roles: READERS,
      params: NodeParams,
      responses: { 200: { description: 'the node', schema: NodeSchema } },
      errors: [ErrorCode.NodeNotFound],
      async handler({ params }) {
        const node = await getNode(db, params.id);
        if (!node) throw notFound(ErrorCode.NodeNotFound, 'node', params.id);
        return { status: 200, body: view(node, await activeRunsOfNode(db, node.id)) };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/nodes/{id}/enrolment-token',
      operationId: 'reissueNodeEnrolment',
      summary: 'A new enrolment token for a node that has not enrolled yet',
      description: 'Earlier tokens of the node stop working.',
      tag: 'nodes',
      roles: ADMINS,
      params: NodeParams,
      responses: { 201: { description: 'the token, in this response only', schema: NodeEnrolmentSchema } },
      errors: [ErrorCode.NodeNotFound, ErrorCode.NodeNotPending],
      async handler({ params, principal }) {
        const issued = await reissueEnrolment(db, params.id, principal!.name, nodes.enrolmentSeconds);
        return { status: 201, headers: { 'cache-control': 'no-store' }, body: enrolment(issued) };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/nodes/{id}/revoke',
      operationId: 'revokeNode',
      summary: 'Revoke a node: every call it makes is refused from now on, on open connections too',
      description:
        'The gateway checks the node on every call, so this takes effect at the next call of an open connection. The node\'s active runs end as failed with reason `node-revoked` (their containers cannot be reached any more; what the node sends later is not accepted). Revoking a revoked node changes nothing.',
      tag: 'nodes',
      roles: ADMINS,
      params: NodeParams,
      responses: { 200: { description: 'the revoked node', schema: NodeSchema } },
      errors: [ErrorCode.NodeNotFound],
      async handler({ params, principal }) {
        const revoked = await revokeNode(db, params.id, principal!.name);
        if (!revoked) throw notFound(ErrorCode.NodeNotFound, 'node', params.id);
        for (const run of revoked.activeRuns) await signalNodeRevoked(deps.temporal, run.deploymentId, run.runId);
        return { status: 200, body: view(revoked.node, revoked.activeRuns.map((r) => r.runId)) };
      },
    }),
  ];
}
