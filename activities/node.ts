import { createPrivateKey, createPublicKey } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { openSealedForNode } from '../core/crypto.js';
import { RunFailure, type RunOutcome, type RunSpec } from '../core/domain.js';
import type { ExecutionAdapter } from './execution/adapter.js';

/** A run id (core/ids.ts): the only thing a node takes from a task, checked before it reaches any path or call. */
export const RUN_ID_PATTERN = /^run-[a-z0-9]{12}$/;
const DEPLOYMENT_ID_PATTERN = /^dep-[a-z0-9]{12}$/;

/** What the node API answers for a run (`GET /v1/node/runs/{id}`), and a reason when it answers that it has none. */
export interface RunGrants {
  grant(runId: string): Promise<unknown>;
}

/** Tells a grant's absence (the run is not this node's, or no longer active) from a failure to ask. */
export class NoGrantError extends Error {}

const Sealed = z.object({ v: z.literal(1), epk: z.string().min(1), nonce: z.string().min(1), tag: z.string().min(1), ct: z.string() });

/**
 * A run's grant as the node API answers it. The node checks what it uses: ids by their pattern (they become
 * container names and paths), environment names as names (a `=` in one would set another variable).
 */
const Grant = z.object({
  spec: z.object({
    runId: z.string().regex(RUN_ID_PATTERN),
    deploymentId: z.string().regex(DEPLOYMENT_ID_PATTERN),
    action: z.string().regex(/^[a-z][a-z0-9-]{0,30}$/),
    image: z.string().regex(/^[a-z0-9][a-z0-9._\-/:@]*$/i),
    parameters: z.record(z.string(), z.unknown()),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string().refine((v) => !v.includes('\0'), 'no NUL')),
    timeoutSeconds: z.number().int().positive(),
    stopGraceSeconds: z.number().int().nonnegative(),
    cancelNow: z.boolean().optional(),
    logMaxBytes: z.number().int().nonnegative().optional(),
    cpus: z.number().positive().optional(),
    memoryMb: z.number().int().positive().optional(),
    templateFiles: z.object({ sourceId: z.string().regex(/^src-[a-z0-9]{12}$/), sha256: z.string().regex(/^[0-9a-f]{64}$/) }).optional(),
    restoreStateVersion: z.number().int().nonnegative().optional(),
  }),
  secrets: Sealed.nullish(),
});

/**
 * What a task may say: the run, and to stop it at once. Workflows started before `grant-from-node-api` still
 * send the whole spec (and secrets sealed to `nodePublicKey()`): of that, too, only these are taken.
 */
const ExecuteInput = z.object({ runId: z.string(), cancelNow: z.boolean().optional() });

function refuse(message: string): ApplicationFailure {
  return ApplicationFailure.create({ type: RunFailure.Infrastructure, message, nonRetryable: true });
}

/** A run id from a task, or a non-retryable failure: `../../..` must never reach a path. */
function checkedRunId(runId: unknown): string {
  if (typeof runId !== 'string' || !RUN_ID_PATTERN.test(runId)) {
    throw refuse(`'${String(runId).slice(0, 80)}' is not a run id (run-<12 of a-z0-9>): the task is refused`);
  }
  return runId;
}

/**
 * Activities of a node worker (task queue `node-<id>`): it can only execute and clean up runs. A task names
 * a run and nothing more; what the run executes comes from the node API (the run's grant, for this node
 * only while the run is active), and its secrets are opened with this node's sealing key.
 */
export interface NodeActivityDeps {
  adapter: ExecutionAdapter;
  grants: RunGrants;
  /** The X25519 key run secrets are sealed to (PKCS#8 PEM). */
  sealingKeyPem: string;
  /** Told when a run starts and ends executing here (the heartbeat's active runs). */
  onRun?: ((runId: string, executing: boolean) => void) | undefined;
}

/** A target's execution activities: a node's, and the cluster worker's for the `cluster` target (its grants from Postgres). */
export function createNodeActivities(deps: NodeActivityDeps) {
  const publicKey = createPublicKey(createPrivateKey(deps.sealingKeyPem)).export({ type: 'spki', format: 'der' }).toString('base64');

  function openSecrets(runId: string, sealed: z.infer<typeof Sealed> | null | undefined): Record<string, unknown> {
    if (!sealed) return {};
    let opened: unknown;
    try {
      opened = JSON.parse(openSealedForNode(deps.sealingKeyPem, sealed).toString('utf8'));
    } catch {
      // Sealed to another key: this node's sealing key is not the one it registered. Retrying cannot help.
      throw refuse(`the secrets of run ${runId} were sealed for another node key`);
    }
    if (typeof opened !== 'object' || opened === null || Array.isArray(opened)) throw refuse(`the secrets of run ${runId} are not an object`);
    return opened as Record<string, unknown>;
  }

  async function grantOf(runId: string): Promise<{ spec: RunSpec; secrets: Record<string, unknown> }> {
    let answer: unknown;
    try {
      answer = await deps.grants.grant(runId);
    } catch (err) {
      // The run is not this node's or has ended: no attempt will get it.
      if (err instanceof NoGrantError) throw refuse(`no grant for run ${runId}: ${err.message}`);
      throw err; // unreachable, or the API failed: the activity's retry policy tries again
    }
    const parsed = Grant.safeParse(answer);
    if (!parsed.success) {
      throw refuse(`the grant of run ${runId} is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    }
    const { spec, secrets } = parsed.data;
    if (spec.runId !== runId) throw refuse(`asked for the grant of run ${runId}, got one for ${spec.runId}`);
    return { spec, secrets: openSecrets(runId, secrets) };
  }

  return {
    /**
     * The public half of this target's sealing key, for workflows started before `grant-from-node-api` (they
     * ask for it and seal the run's secrets to it); since then secrets are sealed to the pinned key only.
     */
    async nodePublicKey(): Promise<string> {
      return Promise.resolve(publicKey);
    },

    async executeRun(input: { runId: string; cancelNow?: boolean | undefined }): Promise<RunOutcome> {
      const task = ExecuteInput.safeParse(input);
      if (!task.success) throw refuse(`an executeRun task names its run ({runId, cancelNow?}): ${task.error.issues.map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`).join('; ')}`);
      const runId = checkedRunId(task.data.runId);
      const ctx = Context.current();
      // Only a cancel that someone asked for stops the template; any other reason to stop this attempt
      // (workflow terminated or reset, worker shutdown, timed out) leaves the container to be adopted.
      const cancel = new AbortController();
      const abandon = new AbortController();
      const onAbort = () => (ctx.cancellationDetails?.cancelRequested ? cancel.abort() : abandon.abort());
      if (ctx.cancellationSignal.aborted) onAbort();
      else ctx.cancellationSignal.addEventListener('abort', onAbort, { once: true });
      deps.onRun?.(runId, true);
      try {
        const { spec, secrets } = await grantOf(runId);
        // The task may only ask to stop sooner, never to keep running what the API says to stop.
        const cancelNow = task.data.cancelNow === true || spec.cancelNow === true;
        if (cancelNow) cancel.abort();
        return await deps.adapter.execute({ ...spec, cancelNow }, secrets, {
          signal: cancel.signal,
          abandon: abandon.signal,
          heartbeat: (details) => {
            ctx.heartbeat(details);
          },
          log: (message, fields) => {
            ctx.log.info(message, { runId, ...fields });
          },
        });
      } finally {
        deps.onRun?.(runId, false);
      }
    },

    async cleanupRun(runId: string): Promise<void> {
      await deps.adapter.cleanup(checkedRunId(runId));
    },
  };
}

export type NodeActivities = ReturnType<typeof createNodeActivities>;
