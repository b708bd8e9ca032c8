import { ApplicationFailure } from '@temporalio/common';
import type { StatePolicy } from '../../core/config.js';
import type { SecretBox } from '../../core/crypto.js';
import type { Db } from '../../core/db/pool.js';
import { StateStorageError, archiveStateForRun, restoreStateForRun } from '../../core/db/state.js';
import type { StateStore } from '../execution/adapter.js';

/**
 * A damaged version or an archive over the limit ends the run with that reason at once: retrying cannot
 * help. A superseded write is retried: the attempt that superseded it may be a stale one (its workflow
 * terminated, then the run resumed by the reconciler), and the retry claims the version back from it.
 */
function asFailure(err: unknown): unknown {
  if (!(err instanceof StateStorageError)) return err;
  const nonRetryable = err.reason !== 'state-write-superseded';
  return ApplicationFailure.create({ type: err.reason, message: err.message, details: [err.details], nonRetryable });
}

/** State versions of a node inside the cluster (the built-in node `local`): encrypted chunks in Postgres. */
export class PostgresStateStore implements StateStore {
  constructor(
    private readonly db: Db,
    private readonly box: SecretBox,
    private readonly policy: StatePolicy,
  ) {}

  async write(deploymentId: string, runId: string, archive: AsyncIterable<Buffer>, onProgress?: (bytes: number) => void) {
    try {
      return await archiveStateForRun(
        this.db,
        this.box,
        { deploymentId, runId, keep: this.policy.versionsKept, defaultMaxMb: this.policy.maxMb, onProgress },
        archive,
      );
    } catch (err) {
      throw asFailure(err);
    }
  }

  async *read(deploymentId: string, version: number, runId: string) {
    try {
      yield* restoreStateForRun(this.db, this.box, { runId, deploymentId }, version);
    } catch (err) {
      throw asFailure(err);
    }
  }
}
