import type { SecretBox } from '../../core/crypto.js';
import type { Db } from '../../core/db/pool.js';
import { archiveStateForRun, restoreStateForRun } from '../../core/db/state.js';
import type { StateStore } from '../execution/adapter.js';

/** State versions of a node inside the cluster (the built-in node `local`): encrypted chunks in Postgres. */
export class PostgresStateStore implements StateStore {
  constructor(
    private readonly db: Db,
    private readonly box: SecretBox,
    /** How many versions each deployment keeps. */
    private readonly keep?: number,
  ) {}

  write(deploymentId: string, runId: string, archive: AsyncIterable<Buffer>) {
    return archiveStateForRun(this.db, this.box, { deploymentId, runId, keep: this.keep }, archive);
  }

  read(deploymentId: string, version: number, runId: string) {
    return restoreStateForRun(this.db, this.box, { runId, deploymentId }, version);
  }
}
