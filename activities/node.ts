import { createPrivateKey, createPublicKey } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { openSealedForNode } from '../core/crypto.js';
import { RunFailure, type RunOutcome, type RunSpec } from '../core/domain.js';
import type { ExecutionAdapter } from './execution/adapter.js';

/** Activities of a node worker (task queue `node-<id>`): it can only execute and clean up runs. */
export function createNodeActivities(deps: { adapter: ExecutionAdapter; nodePrivateKeyPem: string }) {
  const publicKey = createPublicKey(createPrivateKey(deps.nodePrivateKeyPem)).export({ type: 'spki', format: 'der' }).toString('base64');

  function openSecrets(spec: RunSpec): Record<string, unknown> {
    if (!spec.secrets) return {};
    try {
      return JSON.parse(openSealedForNode(deps.nodePrivateKeyPem, spec.secrets).toString('utf8')) as Record<string, unknown>;
    } catch {
      // Sealed to another key: this node's key changed since the run was prepared. Retrying cannot help.
      throw ApplicationFailure.create({ type: RunFailure.Infrastructure, message: 'the run\'s secrets were sealed for another node key', nonRetryable: true });
    }
  }

  return {
    /** The public half of this node's key; the cluster seals each run's secrets to it. */
    async nodePublicKey(): Promise<string> {
      return Promise.resolve(publicKey);
    },

    async executeRun(spec: RunSpec): Promise<RunOutcome> {
      const ctx = Context.current();
      // Only a cancel that someone asked for stops the template; any other reason to stop this attempt
      // (workflow terminated or reset, worker shutdown, timed out) leaves the container to be adopted.
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
      await deps.adapter.cleanup(runId);
    },
  };
}

export type NodeActivities = ReturnType<typeof createNodeActivities>;
