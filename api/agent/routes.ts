/**
 * The agent API: what the pod-runner inside a run's container calls back (infra/images/pod-runner). Each call
 * carries the run's own credential, valid only for that run and only while it is active, so a template
 * that reads it can do no more than it already could: read its own state, add to its own log.
 * Kept apart from the operator API: raw bodies (archives, log bytes) and no roles.
 */
import { pipeline } from 'node:stream/promises';
import express, { Router, type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import type { StatePolicy } from '../../core/config.js';
import type { SecretBox } from '../../core/crypto.js';
import { appendLogFrames } from '../../core/db/logs.js';
import type { Db } from '../../core/db/pool.js';
import { markRunPhase } from '../../core/db/runs.js';
import { archivedStateVersion, getAgentStateFailure, markRunAgentStarted, recordAgentResult, recordAgentStateFailure, runTemplateSource, verifyRunAgent, type RunAgentGrant } from '../../core/db/run-agents.js';
import { StateStorageError, archiveStateForRun, restoreStateForRun } from '../../core/db/state.js';
import { RunFailure, isUnreadableStateReason } from '../../core/domain.js';
import { readSourceArchive } from '../../core/db/template-sources.js';
import { AppError, ErrorCode } from '../../core/errors.js';
import { nodeOfRun } from '../../core/db/nodes.js';
import { gatewayWord } from '../node/gateway-auth.js';
import { MAX_OUTPUTS_BYTES, parseOutputs } from '../../core/outputs.js';
import { LOG_FRAMES_TYPE, parseLogFrames } from './log-frames.js';

export interface AgentDeps {
  db: Db;
  secrets: SecretBox;
  state: StatePolicy;
  /** Per stream: the runner enforces the cap itself; this only bounds what a misbehaving one can store. */
  logMaxBytes: number;
  /** What the node gateway presents: a node's runs are served only through it, for that node. */
  gatewaySecret: string;
}

/** One upload of log frames; the runner sends at most 256 KiB of log at a time. */
const MAX_LOG_UPLOAD_BYTES = 8 * 1024 * 1024;
/** The cap's marker line comes on top of the cap. */
const LOG_MARKER_SLACK = 1024;

export const AgentResultSchema = z.strictObject({
  exitCode: z.number().int(),
  signal: z.string().max(32).optional(),
  stopped: z.boolean(),
  /** outputs.json's bytes, base64: parsed here with the Docker adapter's own code, so both agree. */
  outputsFile: z.base64().max(Math.ceil((MAX_OUTPUTS_BYTES * 4) / 3) + 4).optional(),
  warnings: z.array(z.string().max(4096)).max(100).default([]),
  /** Checked, never trusted: the version recorded is the one this run archived (a template can call the agent too). */
  stateVersion: z.number().int().min(1).optional(),
  /** Why the runner could not unpack the state to restore (damaged or refused): the run ends as state-corrupt. */
  restoreFailure: z.string().max(4096).optional(),
});

type AgentRequest = Request<{ runId: string }> & { grant?: RunAgentGrant; ended?: { status: string; reason: string | null } | undefined };

function grantOf(req: AgentRequest): RunAgentGrant {
  if (!req.grant) throw new Error('agent route without authentication');
  return req.grant;
}

export function agentRouter(deps: AgentDeps): Router {
  const router = Router();

  /** `lateState`: a node's run that has ended may still store the state its container left (set apart). */
  const authenticateFor = (opts: { lateState: boolean }) => (req: AgentRequest, _res: Response, next: NextFunction) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) {
      next(new AppError(ErrorCode.Unauthenticated, 'agent calls need the run\'s credential (Authorization: Bearer …)'));
      return;
    }
    const credential = m[1]!;
    (async () => {
      const word = gatewayWord(req, deps.gatewaySecret);
      const grant = await verifyRunAgent(deps.db, req.params.runId, credential, { allowEnded: opts.lateState });
      if (!grant) throw new AppError(ErrorCode.Unauthenticated, 'the credential is not valid for this run, or the run has ended');
      // A node's run is served only through the gateway, for the node it runs on; a cluster run (its pod calls
      // straight in) never through it. A credential that leaked off its node is worth nothing elsewhere.
      const node = await nodeOfRun(deps.db, grant.runId);
      const caller = word.via === 'gateway' ? word.nodeId : undefined;
      if (node !== caller || (node !== undefined && word.via !== 'gateway')) {
        throw new AppError(ErrorCode.RunNotOfNode, node ? `run '${grant.runId}' is served to its node '${node}' through the node gateway only` : `run '${grant.runId}' is not a node's run`);
      }
      // Only a node comes back late (a pod is gone with its run); nothing but its state is taken then.
      if (grant.ended && node === undefined) throw new AppError(ErrorCode.Unauthenticated, 'the credential is not valid for this run, or the run has ended');
      req.grant = grant;
      req.ended = grant.ended;
    })().then(() => next(), next);
  };
  const authenticate = authenticateFor({ lateState: false });

  /** The archive to restore into /state before the template starts; 204 for a deployment's first run. */
  router.get('/v1/agent/runs/:runId/state', authenticate, (req: AgentRequest, res, next) => {
    const grant = grantOf(req);
    (async () => {
      await markRunAgentStarted(deps.db, grant.runId);
      if (grant.restoreVersion === undefined) {
        res.status(204).end();
        await markRunPhase(deps.db, grant.runId, 'executing');
        return;
      }
      // A damaged version is refused before any byte (the reader checks it before its first chunk), and
      // remembered: the run ends as state-corrupt. A chunk found altered half-way is remembered too, so the
      // runner's retry is refused at once.
      const known = await getAgentStateFailure(deps.db, grant.runId);
      if (known && isUnreadableStateReason(known.reason)) throw new StateStorageError(known.reason, known.message, { deploymentId: grant.deploymentId, version: grant.restoreVersion });
      res.status(200).type('application/gzip');
      await pipeline(restoreStateForRun(deps.db, deps.secrets, grant, grant.restoreVersion), res);
    })().catch(async (err: unknown) => {
      if (err instanceof StateStorageError) await recordAgentStateFailure(deps.db, grant.runId, err).catch(() => undefined);
      // Headers are gone: the runner sees a cut stream (and a gzip error) and fails the run.
      if (!res.headersSent) next(err);
      else res.destroy(err instanceof Error ? err : new Error(String(err)));
    });
  });

  /** An ad-hoc template's files (tar+gzip), unpacked by the runner at /template; 404 for a built template. */
  router.get('/v1/agent/runs/:runId/template', authenticate, (req: AgentRequest, res, next) => {
    const grant = grantOf(req);
    (async () => {
      const sourceId = await runTemplateSource(deps.db, grant.runId);
      const archive = sourceId ? await readSourceArchive(deps.db, sourceId) : undefined;
      if (!archive) throw new AppError(ErrorCode.SourceNotFound, 'this run\'s template has no files to mount (it is not ad-hoc)');
      res.status(200).type('application/gzip').send(archive);
    })().catch(next);
  });

  /** The archive of /state after the template ended; idempotent per run, so a retried upload is harmless. */
  router.put('/v1/agent/runs/:runId/state', authenticateFor({ lateState: true }), (req: AgentRequest, res, next) => {
    const grant = grantOf(req);
    if (!req.is('application/gzip')) {
      next(new AppError(ErrorCode.UnsupportedMediaType, 'the state archive must be sent as application/gzip'));
      return;
    }
    (async () => {
      // Already found over the limit: a retried upload is refused before its body is read.
      const known = await getAgentStateFailure(deps.db, grant.runId);
      if (known?.reason === 'state-too-large') throw new StateStorageError('state-too-large', known.message, { deploymentId: grant.deploymentId });
      // Stopping early (over the limit, a superseded write) must leave the connection whole so the runner reads
      // the refusal; a reset would look like a lost connection and be retried.
      const body = req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>;
      // The run ended before its node sent this (the node was away past the run's timeout, say): the state
      // the template left is kept, set apart, for an operator to look at and promote; never dropped, never current.
      const quarantine = req.ended && `run ${grant.runId} had ended (${req.ended.status}${req.ended.reason ? `: ${req.ended.reason}` : ''}) when its node sent this state`;
      const v = await archiveStateForRun(
        deps.db,
        deps.secrets,
        { deploymentId: grant.deploymentId, runId: grant.runId, keep: deps.state.versionsKept, defaultMaxMb: deps.state.maxMb, ...(quarantine ? { quarantine } : {}) },
        body,
      );
      res.status(200).json({ version: v.version, sha256: v.sha256, sizeBytes: v.sizeBytes, ...(v.quarantine ? { quarantine: v.quarantine } : {}) });
    })().catch(async (err: unknown) => {
      // Over the limit, the run ends as state-too-large whatever the runner reports; the rest of the body is not read.
      if (err instanceof StateStorageError && err.reason === 'state-too-large') await recordAgentStateFailure(deps.db, grant.runId, err).catch(() => undefined);
      if (!req.complete) res.setHeader('connection', 'close');
      next(err);
    });
  });

  /**
   * Log frames (already masked by the runner) of every stream, in the order the runner read them: stored
   * in that order, all or none, exactly once by offset whatever is retried (api/agent/log-frames.ts).
   */
  router.post(
    '/v1/agent/runs/:runId/log-frames',
    authenticate,
    express.raw({ type: LOG_FRAMES_TYPE, limit: MAX_LOG_UPLOAD_BYTES }),
    (req: AgentRequest, res, next) => {
      const grant = grantOf(req);
      if (!req.is(LOG_FRAMES_TYPE) || !Buffer.isBuffer(req.body)) {
        next(new AppError(ErrorCode.UnsupportedMediaType, `log frames must be sent as ${LOG_FRAMES_TYPE}`));
        return;
      }
      const body = req.body;
      (async () => {
        const frames = parseLogFrames(body);
        const outcome = await appendLogFrames(deps.db, grant.runId, frames, { maxStreamBytes: deps.logMaxBytes + LOG_MARKER_SLACK, at: new Date() });
        if (outcome.stored) {
          res.status(204).end();
          return;
        }
        const storedBytes = Object.fromEntries(Object.entries(outcome.lengths));
        if (outcome.reason === 'gap') {
          res.status(409).json({
            code: ErrorCode.LogOffsetMismatch,
            message: `stream ${outcome.stream} has ${outcome.lengths[outcome.stream] ?? 0} bytes stored; nothing of this call was stored: send every stream from its storedBytes`,
            storedBytes,
            details: { stream: outcome.stream, storedBytes },
          });
          return;
        }
        throw new AppError(ErrorCode.PayloadTooLarge, `stream ${outcome.stream} would exceed the run's log cap of ${deps.logMaxBytes} bytes; nothing of this call was stored`, {
          stream: outcome.stream,
          storedBytes,
        });
      })().catch(next);
    },
  );

  /** The runner's report: the template's exit, its outputs, and the state version it archived. */
  router.post('/v1/agent/runs/:runId/result', authenticate, express.json({ limit: 2 * 1024 * 1024 }), (req: AgentRequest, res, next) => {
    const grant = grantOf(req);
    const parsed = AgentResultSchema.safeParse(req.body);
    if (!parsed.success) {
      next(new AppError(ErrorCode.ValidationFailed, `invalid result: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`));
      return;
    }
    const { outputsFile, stateVersion: claimed, restoreFailure, ...report } = parsed.data;
    const outputs = outputsFile === undefined ? { warnings: [] } : parseOutputs(Buffer.from(outputsFile, 'base64').toString('utf8'));
    (async () => {
      // The template shares the runner's way to the agent and could report first: the version recorded is
      // the one this run archived, and a report claiming another is refused.
      const archived = await archivedStateVersion(deps.db, grant.runId);
      if (claimed !== undefined && claimed !== archived) {
        throw new AppError(
          ErrorCode.ValidationFailed,
          `stateVersion ${claimed} is not the state version this run archived (${archived === undefined ? 'it archived none' : archived}); result not recorded`,
          { stateVersion: claimed, archivedStateVersion: archived ?? null },
        );
      }
      const result = {
        ...report,
        warnings: [...report.warnings, ...outputs.warnings],
        ...(outputs.outputs ? { outputs: outputs.outputs } : {}),
        ...(archived !== undefined ? { stateVersion: archived } : {}),
      };
      if (restoreFailure !== undefined && grant.restoreVersion !== undefined) {
        await recordAgentStateFailure(deps.db, grant.runId, {
          reason: RunFailure.StateCorrupt,
          message: `state version ${grant.restoreVersion} of ${grant.deploymentId} cannot be unpacked (${restoreFailure}); roll back to an earlier version`,
        });
      }
      await recordAgentResult(deps.db, grant.runId, result);
      res.status(204).end();
    })().catch(next);
  });

  return router;
}
