import { createHash } from 'node:crypto';
import type { SecretBox } from '../crypto.js';
import { inTransaction, type Db, type Queryable } from './pool.js';
import { markRunPhase } from './runs.js';

export interface StateVersion {
  deploymentId: string;
  version: number;
  runId: string | null;
  sha256: string;
  sizeBytes: number;
  createdAt: string;
}

interface StateVersionRow {
  deployment_id: string;
  version: number;
  run_id: string | null;
  status: 'writing' | 'complete';
  sha256: Buffer | null;
  size_bytes: string | null;
  chunk_count: number | null;
  created_at: Date;
}

const toVersion = (r: StateVersionRow): StateVersion => ({
  deploymentId: r.deployment_id,
  version: r.version,
  runId: r.run_id,
  sha256: r.sha256!.toString('hex'),
  sizeBytes: Number(r.size_bytes),
  createdAt: r.created_at.toISOString(),
});

export const STATE_CHUNK_BYTES = 1024 * 1024;
const aad = (deploymentId: string, version: number, idx: number) => `state/${deploymentId}/${version}/${idx}`;

/** Splits a byte stream into pieces of exactly `size` bytes (the last may be shorter). */
async function* rechunk(source: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let held = 0;
  for await (const piece of source) {
    let rest = piece;
    while (held + rest.length >= size) {
      const take = size - held;
      parts.push(rest.subarray(0, take));
      yield Buffer.concat(parts);
      parts = [];
      held = 0;
      rest = rest.subarray(take);
    }
    if (rest.length > 0) {
      parts.push(rest);
      held += rest.length;
    }
  }
  if (held > 0) yield Buffer.concat(parts);
}

/**
 * Stores the archive a run produced as the deployment's next state version. Idempotent per run: a retry
 * after the version was completed returns it; a retry after a half-written attempt starts that version over.
 */
export async function writeStateVersion(
  db: Db,
  box: SecretBox,
  opts: { deploymentId: string; runId: string; keep?: number },
  archive: AsyncIterable<Buffer>,
): Promise<StateVersion> {
  const existing = await db.query<StateVersionRow>('SELECT * FROM state_versions WHERE run_id = $1', [opts.runId]);
  if (existing.rows[0]?.status === 'complete') return toVersion(existing.rows[0]);
  const version = await inTransaction(db, async (tx) => {
    // One writer at a time per deployment picks the next number.
    await tx.query('SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE', [opts.deploymentId]);
    const old = await tx.query<StateVersionRow>('SELECT * FROM state_versions WHERE run_id = $1', [opts.runId]);
    if (old.rows[0]) {
      await tx.query('DELETE FROM state_chunks WHERE deployment_id = $1 AND version = $2', [opts.deploymentId, old.rows[0].version]);
      return old.rows[0].version;
    }
    const { rows } = await tx.query<{ version: number }>(
      `INSERT INTO state_versions (deployment_id, version, run_id, status)
       VALUES ($1, (SELECT coalesce(max(version), 0) + 1 FROM state_versions WHERE deployment_id = $1), $2, 'writing')
       RETURNING version`,
      [opts.deploymentId, opts.runId],
    );
    return rows[0]!.version;
  });
  const hash = createHash('sha256');
  let size = 0;
  let idx = 0;
  // One insert in flight while the next chunk is compressed: storing overlaps archiving.
  let inFlight: Promise<unknown> = Promise.resolve();
  for await (const chunk of rechunk(archive, STATE_CHUNK_BYTES)) {
    hash.update(chunk);
    size += chunk.length;
    const sealed = box.seal(chunk, aad(opts.deploymentId, version, idx));
    await inFlight;
    inFlight = db.query('INSERT INTO state_chunks (deployment_id, version, idx, data) VALUES ($1, $2, $3, $4)', [opts.deploymentId, version, idx, sealed]);
    // Observed by the next `await inFlight`; this only keeps a failure from counting as unhandled meanwhile.
    inFlight.catch(() => undefined);
    idx++;
  }
  await inFlight;
  return inTransaction(db, async (tx) => {
    const { rows } = await tx.query<StateVersionRow>(
      `UPDATE state_versions SET status = 'complete', sha256 = $3, size_bytes = $4, chunk_count = $5
        WHERE deployment_id = $1 AND version = $2 RETURNING *`,
      [opts.deploymentId, version, hash.digest(), size, idx],
    );
    await tx.query(
      `UPDATE deployments SET current_state_version = $2 WHERE id = $1 AND (current_state_version IS NULL OR current_state_version < $2)`,
      [opts.deploymentId, version],
    );
    await applyRetention(tx, opts.deploymentId, opts.keep);
    return toVersion(rows[0]!);
  });
}

/**
 * Keeps the newest `keep` complete versions (always including the current one) and drops versions whose
 * writing was abandoned (their run has ended without completing them). Their chunks go with them (cascade).
 */
async function applyRetention(tx: Queryable, deploymentId: string, keep: number | undefined): Promise<void> {
  if (keep !== undefined) {
    await tx.query(
      `DELETE FROM state_versions s WHERE s.deployment_id = $1 AND s.status = 'complete'
          AND s.version <> coalesce((SELECT current_state_version FROM deployments WHERE id = $1), 0)
          AND s.version NOT IN (SELECT version FROM state_versions WHERE deployment_id = $1 AND status = 'complete'
                                ORDER BY version DESC LIMIT $2)`,
      [deploymentId, keep],
    );
  }
  await tx.query(
    `DELETE FROM state_versions s WHERE s.deployment_id = $1 AND s.status = 'writing'
        AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id AND r.status IN ('pending', 'running', 'cancelling'))`,
    [deploymentId],
  );
}

/**
 * A run's /state restored: its phase is `restoring` while the version is read, `executing` once it is read
 * whole. The node's store and the agent API both restore through here, so both tell the phase alike.
 */
export async function* restoreStateForRun(db: Db, box: SecretBox, run: { runId: string; deploymentId: string }, version: number): AsyncGenerator<Buffer> {
  await markRunPhase(db, run.runId, 'restoring');
  yield* readStateVersion(db, box, run.deploymentId, version);
  await markRunPhase(db, run.runId, 'executing');
}

/** A run's /state archived (writeStateVersion), its phase `archiving` meanwhile. */
export async function archiveStateForRun(
  db: Db,
  box: SecretBox,
  opts: { deploymentId: string; runId: string; keep?: number },
  archive: AsyncIterable<Buffer>,
): Promise<StateVersion> {
  await markRunPhase(db, opts.runId, 'archiving');
  return writeStateVersion(db, box, opts, archive);
}

/** The archive of a complete version, decrypted chunk by chunk; fails if a chunk or the checksum is wrong. */
export async function* readStateVersion(db: Queryable, box: SecretBox, deploymentId: string, version: number): AsyncGenerator<Buffer> {
  const { rows } = await db.query<StateVersionRow>(`SELECT * FROM state_versions WHERE deployment_id = $1 AND version = $2 AND status = 'complete'`, [
    deploymentId,
    version,
  ]);
  const meta = rows[0];
  if (!meta) throw new Error(`state version ${version} of ${deploymentId} does not exist`);
  const hash = createHash('sha256');
  const fetchChunk = (idx: number) =>
    db.query<{ data: Buffer }>('SELECT data FROM state_chunks WHERE deployment_id = $1 AND version = $2 AND idx = $3', [deploymentId, version, idx]);
  // The next chunk is fetched while the current one is being restored.
  let next = meta.chunk_count! > 0 ? fetchChunk(0) : undefined;
  for (let idx = 0; idx < meta.chunk_count!; idx++) {
    const chunk = await next!;
    next = idx + 1 < meta.chunk_count! ? fetchChunk(idx + 1) : undefined;
    next?.catch(() => undefined); // observed when awaited; not unhandled if we stop early
    if (!chunk.rows[0]) throw new Error(`state version ${version} of ${deploymentId} is missing chunk ${idx}`);
    const plain = box.open(chunk.rows[0].data, aad(deploymentId, version, idx));
    hash.update(plain);
    yield plain;
  }
  if (!hash.digest().equals(meta.sha256!)) throw new Error(`state version ${version} of ${deploymentId} fails its checksum`);
}

export async function listStateVersions(db: Queryable, deploymentId: string): Promise<StateVersion[]> {
  const { rows } = await db.query<StateVersionRow>(
    `SELECT * FROM state_versions WHERE deployment_id = $1 AND status = 'complete' ORDER BY version DESC`,
    [deploymentId],
  );
  return rows.map(toVersion);
}

export async function getStateVersion(db: Queryable, deploymentId: string, version: number): Promise<StateVersion | undefined> {
  const { rows } = await db.query<StateVersionRow>(
    `SELECT * FROM state_versions WHERE deployment_id = $1 AND version = $2 AND status = 'complete'`,
    [deploymentId, version],
  );
  return rows[0] && toVersion(rows[0]);
}

/**
 * Makes a new version whose content is that of an earlier one (re-encrypted under its new number), and
 * makes it current. Holds the deployment's row lock throughout, so no run can start half-way through;
 * refused while a run is active, since that run would archive over it.
 */
export async function rollbackStateVersion(
  db: Db,
  box: SecretBox,
  deploymentId: string,
  from: number,
  keep?: number,
): Promise<StateVersion | 'run-active' | 'not-found'> {
  return inTransaction(db, async (tx) => {
    await tx.query('SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE', [deploymentId]);
    const active = await tx.query(`SELECT 1 FROM runs WHERE deployment_id = $1 AND status IN ('pending', 'running', 'cancelling')`, [deploymentId]);
    if (active.rowCount) return 'run-active';
    const source = await tx.query<StateVersionRow>(`SELECT * FROM state_versions WHERE deployment_id = $1 AND version = $2 AND status = 'complete'`, [
      deploymentId,
      from,
    ]);
    const meta = source.rows[0];
    if (!meta) return 'not-found';
    const { rows } = await tx.query<{ version: number }>(
      `INSERT INTO state_versions (deployment_id, version, status)
       VALUES ($1, (SELECT coalesce(max(version), 0) + 1 FROM state_versions WHERE deployment_id = $1), 'writing') RETURNING version`,
      [deploymentId],
    );
    const version = rows[0]!.version;
    for (let idx = 0; idx < meta.chunk_count!; idx++) {
      const chunk = await tx.query<{ data: Buffer }>('SELECT data FROM state_chunks WHERE deployment_id = $1 AND version = $2 AND idx = $3', [
        deploymentId,
        from,
        idx,
      ]);
      const plain = box.open(chunk.rows[0]!.data, aad(deploymentId, from, idx));
      await tx.query('INSERT INTO state_chunks (deployment_id, version, idx, data) VALUES ($1, $2, $3, $4)', [
        deploymentId,
        version,
        idx,
        box.seal(plain, aad(deploymentId, version, idx)),
      ]);
    }
    const done = await tx.query<StateVersionRow>(
      `UPDATE state_versions SET status = 'complete', sha256 = $3, size_bytes = $4, chunk_count = $5
        WHERE deployment_id = $1 AND version = $2 RETURNING *`,
      [deploymentId, version, meta.sha256, meta.size_bytes, meta.chunk_count],
    );
    await tx.query('UPDATE deployments SET current_state_version = $2, updated_at = now() WHERE id = $1', [deploymentId, version]);
    await applyRetention(tx, deploymentId, keep);
    return toVersion(done.rows[0]!);
  });
}
