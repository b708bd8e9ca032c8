/**
 * The node API (docs/remote-nodes.md): what a node's worker calls, through the gateway only. The gateway
 * verified the node's client certificate and names the node in X-Glider-Node; nothing a node sends in a
 * body says who it is. Every run route answers only for a run of the calling node that is still active.
 */
import { createPublicKey } from 'node:crypto';
import express, { Router, type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import type { Config } from '../../core/config.js';
import type { SecretBox } from '../../core/crypto.js';
import { activeRunsOfNode, enrolNode, getNode, nodeStatusForGateway, recordCertificate, recordHeartbeat, runOfNode } from '../../core/db/nodes.js';
import type { Db } from '../../core/db/pool.js';
import { getAgentResult, getAgentStateFailure, grantRunAgentDigest, runAgentStarted } from '../../core/db/run-agents.js';
import { getRun } from '../../core/db/runs.js';
import { AppError, ErrorCode } from '../../core/errors.js';
import { ID_PATTERN } from '../../core/ids.js';
import { CertificateRequestError, certificateNotAfter, checkedCsr, signNodeCertificate, type CertificateAuthority } from '../../core/pki.js';
import { runGrant } from '../../core/run-grant.js';
import { gatewayWord } from './gateway-auth.js';

export interface NodeApiDeps {
  db: Db;
  secrets: SecretBox;
  ca: CertificateAuthority;
  gatewaySecret: string;
  certificateDays: number;
  runs: Config['runs'];
}

const Pem = (kind: string) => z.string().max(16 * 1024).regex(new RegExp(`^-----BEGIN ${kind}-----[\\s\\S]+-----END ${kind}-----\\s*$`), `a PEM ${kind}`);
export const EnrolBody = z.strictObject({
  token: z.string().min(1).max(200),
  csr: Pem('CERTIFICATE REQUEST'),
  sealingPublicKey: z.base64().max(200),
});
export const RenewBody = z.strictObject({ csr: Pem('CERTIFICATE REQUEST') });
export const HeartbeatBody = z.strictObject({
  version: z.string().min(1).max(64),
  capacity: z.number().int().min(0).max(10_000),
  activeRuns: z.array(z.string().regex(ID_PATTERN)).max(10_000),
});
export const AgentBody = z.strictObject({ credentialSha256: z.base64().refine((s) => Buffer.from(s, 'base64').length === 32, 'the sha256 of the credential (32 bytes, base64)') });
export const ActiveRunsBody = z.strictObject({ runIds: z.array(z.string().regex(ID_PATTERN)).max(10_000) });

type NodeRequest = Request<{ runId?: string; id?: string }> & { nodeId?: string };

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new AppError(ErrorCode.ValidationFailed, `invalid request: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

/** X25519 only: the runner's secrets are sealed to this key (core/crypto.ts). */
function checkSealingKey(base64: string): void {
  try {
    const key = createPublicKey({ key: Buffer.from(base64, 'base64'), format: 'der', type: 'spki' });
    if (key.asymmetricKeyType === 'x25519') return;
  } catch {
    // reported below
  }
  throw new AppError(ErrorCode.ValidationFailed, 'sealingPublicKey must be an X25519 public key (base64 of its SPKI DER)');
}

export function nodeRouter(deps: NodeApiDeps): Router {
  const { db } = deps;
  const router = Router();
  const json = express.json({ limit: 256 * 1024 });
  const handle = (fn: (req: NodeRequest, res: Response) => Promise<unknown>) => (req: NodeRequest, res: Response, next: NextFunction) => {
    fn(req, res).then((body) => {
      if (!res.headersSent) res.status(200).json(body ?? {});
    }, next);
  };

  /** The gateway's word is required; `nodeId` only where a node certificate was presented. */
  const fromGateway = (needsNode: boolean) => (req: NodeRequest, _res: Response, next: NextFunction) => {
    try {
      const word = gatewayWord(req, deps.gatewaySecret);
      if (word.via !== 'gateway') throw new AppError(ErrorCode.NodeIdentityRequired, 'node routes are reached through the node gateway only');
      if (needsNode && !word.nodeId) throw new AppError(ErrorCode.NodeIdentityRequired, 'this route needs the node\'s client certificate');
      req.nodeId = word.nodeId;
      next();
    } catch (err) {
      next(err);
    }
  };
  const nodeOf = (req: NodeRequest): string => {
    if (!req.nodeId) throw new Error('unreachable: a node route without its node');
    return req.nodeId;
  };
  /** An active node calling about one of its own active runs. */
  const ownRun = async (req: NodeRequest): Promise<string> => {
    const nodeId = nodeOf(req);
    const runId = req.params.runId ?? '';
    const node = await getNode(db, nodeId);
    if (node?.status !== 'active') throw new AppError(ErrorCode.NodeRevoked, `node '${nodeId}' is not active`);
    if (!ID_PATTERN.test(runId) || !(await runOfNode(db, runId, nodeId))) {
      throw new AppError(ErrorCode.RunNotOfNode, `run '${runId}' is not an active run of node '${nodeId}'`);
    }
    return runId;
  };
  const sign = async (csr: string, nodeId: string) => {
    try {
      const certificate = await signNodeCertificate(deps.ca, csr, nodeId, { days: deps.certificateDays });
      return { certificate, notAfter: certificateNotAfter(certificate) };
    } catch (err) {
      if (err instanceof CertificateRequestError) throw new AppError(ErrorCode.CertificateRequestInvalid, err.message);
      throw err;
    }
  };

  /** The gateway asks this on every call a node makes: revocation takes effect on open connections too. */
  router.get('/v1/gateway/nodes/:id', fromGateway(false), handle(async (req) => {
    const id = req.params.id ?? '';
    const status = await nodeStatusForGateway(db, id);
    if (!status) throw new AppError(ErrorCode.NodeNotFound, `node '${id}' not found`, { id });
    return { id, status };
  }));

  router.post('/v1/node/enrol', fromGateway(false), json, handle(async (req) => {
    const body = parse(EnrolBody, req.body);
    checkSealingKey(body.sealingPublicKey);
    // The CSR is checked before the token is spent: a bad request leaves the token usable.
    await checkedCsr(body.csr).catch((err: unknown) => {
      throw err instanceof CertificateRequestError ? new AppError(ErrorCode.CertificateRequestInvalid, err.message) : err;
    });
    const notAfter = new Date(Date.now() + deps.certificateDays * 86_400_000);
    const node = await enrolNode(db, body.token, body.sealingPublicKey, notAfter);
    const signed = await sign(body.csr, node.id);
    await recordCertificate(db, node.id, signed.notAfter);
    return { nodeId: node.id, certificate: signed.certificate, caCertificate: deps.ca.certPem, notAfter: signed.notAfter.toISOString() };
  }));

  router.post('/v1/node/certificate', fromGateway(true), json, handle(async (req) => {
    const nodeId = nodeOf(req);
    const body = parse(RenewBody, req.body);
    const node = await getNode(db, nodeId);
    if (node?.status !== 'active') throw new AppError(ErrorCode.NodeRevoked, `node '${nodeId}' is not active: it gets no certificate`);
    const signed = await sign(body.csr, nodeId);
    await recordCertificate(db, nodeId, signed.notAfter);
    return { nodeId, certificate: signed.certificate, caCertificate: deps.ca.certPem, notAfter: signed.notAfter.toISOString() };
  }));

  router.post('/v1/node/heartbeat', fromGateway(true), json, handle(async (req) => {
    const body = parse(HeartbeatBody, req.body);
    await recordHeartbeat(db, nodeOf(req), body);
    return {};
  }));

  router.post('/v1/node/active-runs', fromGateway(true), json, handle(async (req) => {
    const { runIds } = parse(ActiveRunsBody, req.body);
    return { active: await activeRunsOfNode(db, nodeOf(req), runIds) };
  }));

  /** The run's grant: what to execute, from the database, and its secrets sealed to the node's pinned key. */
  router.get('/v1/node/runs/:runId', fromGateway(true), handle(async (req) => {
    const runId = await ownRun(req);
    const node = await getNode(db, nodeOf(req));
    return runGrant(db, deps.secrets, deps.runs, runId, node?.sealingPublicKey ?? null);
  }));

  router.put('/v1/node/runs/:runId/agent', fromGateway(true), json, handle(async (req) => {
    const runId = await ownRun(req);
    const body = parse(AgentBody, req.body);
    const run = await getRun(db, runId);
    if (!run) throw new AppError(ErrorCode.RunNotFound, `run '${runId}' not found`);
    await grantRunAgentDigest(db, { runId, deploymentId: run.deploymentId, restoreVersion: run.stateVersionFrom ?? undefined, credentialSha256: Buffer.from(body.credentialSha256, 'base64') });
    return {};
  }));

  router.get('/v1/node/runs/:runId/report', fromGateway(true), handle(async (req) => {
    const runId = await ownRun(req);
    const [started, run, result, stateFailure] = await Promise.all([runAgentStarted(db, runId), getRun(db, runId), getAgentResult(db, runId), getAgentStateFailure(db, runId)]);
    return { started, archiving: run?.phase === 'archiving', ...(result ? { result } : {}), ...(stateFailure ? { stateFailure } : {}) };
  }));

  return router;
}
