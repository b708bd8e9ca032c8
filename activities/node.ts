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

const ExecuteInput = z.strictObject({ runId: z.string(), cancelNow: z.boolean().optional() });

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

/** A node's activities; given the cluster target's deps (`nodePrivateKeyPem`), the cluster target's (createClusterTargetActivities). */
export function createNodeActivities(deps: NodeActivityDeps): NodeTargetActivities;
export function createNodeActivities(deps: ClusterTargetDeps): ClusterTargetActivities;
export function createNodeActivities(deps: NodeActivityDeps | ClusterTargetDeps): NodeTargetActivities | ClusterTargetActivities {
  return 'grants' in deps ? nodeActivities(deps) : createClusterTargetActivities(deps);
}

function nodeActivities(deps: NodeActivityDeps) {
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
    async executeRun(input: { runId: string; cancelNow?: boolean | undefined }): Promise<RunOutcome> {
      const task = ExecuteInput.safeParse(input);
      if (!task.success) throw refuse(`an executeRun task must be {runId, cancelNow?}: ${task.error.issues.map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`).join('; ')}`);
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

export type NodeTargetActivities = ReturnType<typeof nodeActivities>;

/**
 * The `cluster` target's execution activities, as the cluster worker serves them (it has the database, and its
 * tasks come from its own workflows): the whole spec in the task, secrets sealed to `nodePublicKey()`. Also
 * what histories from before nodes fetched their grants replay against. Nodes never serve these.
 */
export interface ClusterTargetDeps {
  adapter: ExecutionAdapter;
  nodePrivateKeyPem: string;
}

export function createClusterTargetActivities(deps: ClusterTargetDeps) {
  const publicKey = createPublicKey(createPrivateKey(deps.nodePrivateKeyPem)).export({ type: 'spki', format: 'der' }).toString('base64');

  function openSecrets(spec: RunSpec): Record<string, unknown> {
    if (!spec.secrets) return {};
    try {
      return JSON.parse(openSealedForNode(deps.nodePrivateKeyPem, spec.secrets).toString('utf8')) as Record<string, unknown>;
    } catch {
      throw refuse('the run\'s secrets were sealed for another key');
    }
  }

  return {
    /** The public half of this target's key; the workflow seals each run's secrets to it. */
    async nodePublicKey(): Promise<string> {
      return Promise.resolve(publicKey);
    },

    async executeRun(spec: RunSpec): Promise<RunOutcome> {
      checkedRunId(spec.runId);
      const ctx = Context.current();
      const cancel = new AbortController();
      const abandon = new AbortController();
      const onAbort = () => (ctx.cancellationDetails?.cancelRequested ? cancel.abort() : abandon.abort());
      if (ctx.cancellationSignal.aborted) onAbort();
      else ctx.cancellationSignal.addEventListener('abort', onAbort, { once: true });
      if (spec.cancelNow) cancel.abort();
      return deps.adapter.execute(spec, openSecrets(spec), {
        signal: cancel.signal,
        abandon: abandon.signal,
        heartbeat: (details) => {
          ctx.heartbeat(details);
        },
        log: (message, fields) => {
          ctx.log.info(message, { runId: spec.runId, ...fields });
        },
      });
    },

    async cleanupRun(runId: string): Promise<void> {
      await deps.adapter.cleanup(checkedRunId(runId));
    },
  };
}

export type ClusterTargetActivities = ReturnType<typeof createClusterTargetActivities>;

/**
 * What the deployment workflow proxies: a node's `executeRun({runId, cancelNow?})`, and the cluster target's
 * `nodePublicKey()` and `executeRun(spec)` (which histories from before grants replay, too).
 */
export type NodeActivities = NodeTargetActivities & ClusterTargetActivities;
