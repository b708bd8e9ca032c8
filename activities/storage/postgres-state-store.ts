import type { SecretBox } from '../../core/crypto.js';
import type { Db } from '../../core/db/pool.js';
import { setRunPhase } from '../../core/db/runs.js';
import { readStateVersion, writeStateVersion } from '../../core/db/state.js';
import type { StateStore } from '../execution/adapter.js';

/** State versions of a node inside the cluster (the built-in node `local`): encrypted chunks in Postgres. */
export class PostgresStateStore implements StateStore {
  constructor(
    private readonly db: Db,
    private readonly box: SecretBox,
    /** How many versions each deployment keeps. */
    private readonly keep?: number,
  ) {}

  async write(deploymentId: string, runId: string, archive: AsyncIterable<Buffer>) {
    await setRunPhase(this.db, runId, 'archiving');
    return writeStateVersion(this.db, this.box, { deploymentId, runId, keep: this.keep }, archive);
  }

  async *read(deploymentId: string, version: number, runId: string) {
    await setRunPhase(this.db, runId, 'restoring');
    yield* readStateVersion(this.db, this.box, deploymentId, version);
    await setRunPhase(this.db, runId, 'executing');
  }
}
