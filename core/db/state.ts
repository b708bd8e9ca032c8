import { createHash, randomUUID } from 'node:crypto';
import { SealedValueError, sha256, type SecretBox } from '../crypto.js';
import { ACTIVE_RUN_STATUSES, type UnreadableStateReason } from '../domain.js';
import { inTransaction, type Db, type Queryable } from './pool.js';
import { markRunPhase } from './runs.js';

export interface StateVersion {
  deploymentId: string;
  version: number;
  runId: string | null;
  sha256: string;
  sizeBytes: number;
  createdAt: string;
  /** Why it was set apart: its run had ended when its node sent it. Never current until promoted (a rollback to it). */
  quarantine: string | null;
}

interface StateVersionRow {
  deployment_id: string;
  version: number;
  run_id: string | null;
  status: 'writing' | 'complete';
  sha256: Buffer | null;
  size_bytes: string | null;
  chunk_count: number | null;
  writer: string | null;
  chunks_sha256: Buffer | null;
  created_at: Date;
  quarantine: string | null;
}

const toVersion = (r: StateVersionRow): StateVersion => ({
  deploymentId: r.deployment_id,
  version: r.version,
  runId: r.run_id,
  sha256: r.sha256!.toString('hex'),
  sizeBytes: Number(r.size_bytes),
  createdAt: r.created_at.toISOString(),
  quarantine: r.quarantine,
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

/** Why a state version could not be written or read; `reason` is the run's failure reason where one ends with it. */
export class StateStorageError extends Error {
  constructor(
    readonly reason: UnreadableStateReason | 'state-too-large' | 'state-write-superseded',
    message: string,
    readonly details: { deploymentId: string; version?: number } & Record<string, unknown>,
  ) {
    super(message);
    this.name = 'StateStorageError';
  }
}

export interface StateWriteOptions {
  deploymentId: string;
  runId: string;
  /** How many complete versions the deployment keeps. */
  keep?: number | undefined;
  /** The largest archive that may be stored, bytes; beyond it the write fails as `state-too-large` while streaming. */
  maxBytes?: number | undefined;
  /** Called as chunks are stored, with the archive bytes stored so far. */
  onProgress?: ((bytes: number) => void) | undefined;
  /** Store it set apart, for this reason: it does not become current, and retention keeps it. */
  quarantine?: string | undefined;
}

/**
 * Claims the run's version for a new attempt: a fresh writer token, and whatever an earlier attempt stored
 * of it deleted. The claim's UPDATE waits for chunk inserts in flight (they hold the row FOR SHARE), so no
 * chunk of the earlier attempt can land after the delete. A version already complete is returned as it is.
 */
async function claimStateVersion(db: Db, opts: StateWriteOptions, writer: string): Promise<StateVersionRow> {
  return inTransaction(db, async (tx) => {
    // One writer at a time per deployment picks the next number.
    await tx.query('SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE', [opts.deploymentId]);
    const old = await tx.query<StateVersionRow>('SELECT * FROM state_versions WHERE run_id = $1', [opts.runId]);
    if (old.rows[0]?.status === 'complete') return old.rows[0];
    if (old.rows[0]) {
      const { rows } = await tx.query<StateVersionRow>(
        `UPDATE state_versions SET writer = $3, quarantine = $4 WHERE deployment_id = $1 AND version = $2 RETURNING *`,
        [opts.deploymentId, old.rows[0].version, writer, opts.quarantine ?? null],
      );
      await tx.query('DELETE FROM state_chunks WHERE deployment_id = $1 AND version = $2', [opts.deploymentId, old.rows[0].version]);
      return rows[0]!;
    }
    const { rows } = await tx.query<StateVersionRow>(
      `INSERT INTO state_versions (deployment_id, version, run_id, status, writer, quarantine)
       VALUES ($1, (SELECT coalesce(max(version), 0) + 1 FROM state_versions WHERE deployment_id = $1), $2, 'writing', $3, $4)
       RETURNING *`,
      [opts.deploymentId, opts.runId, writer, opts.quarantine ?? null],
    );
    return rows[0]!;
  });
}

/** Stored only while `writer` still holds the version; false when a newer attempt has claimed it. */
async function insertChunk(db: Queryable, v: { deploymentId: string; version: number; writer: string }, idx: number, sealed: Buffer): Promise<boolean> {
  const { rowCount } = await db.query(
    `INSERT INTO state_chunks (deployment_id, version, idx, data, digest)
     SELECT deployment_id, version, $3, $4, $5 FROM state_versions
      WHERE deployment_id = $1 AND version = $2 AND writer = $6 AND status = 'writing' FOR SHARE`,
    [v.deploymentId, v.version, idx, sealed, sha256(sealed), v.writer],
  );
  return rowCount === 1;
}

/** Checks the stored chunks of a version against its chain of digests: all present, in order, none foreign. */
async function storedChunksMatch(db: Queryable, deploymentId: string, version: number, count: number, chain: Buffer | null): Promise<string | undefined> {
  const { rows } = await db.query<{ n: number; first: number | null; last: number | null; missing_digests: number; chain: Buffer | null }>(
    `SELECT count(*)::int AS n, min(idx) AS first, max(idx) AS last, count(*) FILTER (WHERE digest IS NULL)::int AS missing_digests,
            sha256(coalesce(string_agg(digest, ''::bytea ORDER BY idx), ''::bytea)) AS chain
       FROM state_chunks WHERE deployment_id = $1 AND version = $2`,
    [deploymentId, version],
  );
  const r = rows[0]!;
  if (r.n !== count || (count > 0 && (r.first !== 0 || r.last !== count - 1))) {
    return `has ${r.n} of its ${count} chunks`;
  }
  // Versions written before digests were kept (migration 010) have none: their chunks are still checked as they are read.
  if (chain && r.missing_digests === 0 && !r.chain!.equals(chain)) return 'has chunks that are not the ones written for it';
  return undefined;
}

/** sha256 of the concatenated digests: what storedChunksMatch recomputes in Postgres. */
class DigestChain {
  private readonly digests: Buffer[] = [];
  add(sealed: Buffer): void {
    this.digests.push(sha256(sealed));
  }
  digest(): Buffer {
    return sha256(Buffer.concat(this.digests));
  }
}

/**
 * Stores the archive a run produced as the deployment's next state version. Idempotent per run: a retry
 * after the version was completed returns it; a retry after a half-written attempt claims that version
 * afresh, and the earlier attempt, if it is still writing, is refused from then on (state-write-superseded).
 * The version is completed only if what is stored is exactly what this attempt wrote.
 */
export async function writeStateVersion(db: Db, box: SecretBox, opts: StateWriteOptions, archive: AsyncIterable<Buffer>): Promise<StateVersion> {
  const writer = randomUUID();
  const claimed = await claimStateVersion(db, opts, writer);
  if (claimed.status === 'complete') return toVersion(claimed);
  const target = { deploymentId: opts.deploymentId, version: claimed.version, writer };
  const superseded = () =>
    new StateStorageError('state-write-superseded', `state version ${target.version} of ${opts.deploymentId} is being written by a newer attempt of run ${opts.runId}`, {
      deploymentId: opts.deploymentId,
      version: target.version,
    });
  const hash = createHash('sha256');
  const chain = new DigestChain();
  let size = 0;
  let idx = 0;
  // One insert in flight while the next chunk is compressed: storing overlaps archiving.
  let inFlight: Promise<boolean> = Promise.resolve(true);
  try {
    for await (const chunk of rechunk(archive, STATE_CHUNK_BYTES)) {
      size += chunk.length;
      if (opts.maxBytes !== undefined && size > opts.maxBytes) {
        throw new StateStorageError(
          'state-too-large',
          `the /state archive exceeds the deployment's limit of ${formatBytes(opts.maxBytes)} (stopped at ${formatBytes(size)}); the previous state version stays current`,
          { deploymentId: opts.deploymentId, limitBytes: opts.maxBytes },
        );
      }
      hash.update(chunk);
      const sealed = box.seal(chunk, aad(opts.deploymentId, target.version, idx));
      chain.add(sealed);
      if (!(await inFlight)) throw superseded();
      inFlight = insertChunk(db, target, idx, sealed);
      // Observed by the next `await inFlight`; this only keeps a failure from counting as unhandled meanwhile.
      inFlight.catch(() => undefined);
      idx++;
      opts.onProgress?.(size);
    }
    if (!(await inFlight)) throw superseded();
  } catch (err) {
    await inFlight.catch(() => undefined);
    // A version that can never complete is not left half-written (unless a newer attempt owns it now).
    if (err instanceof StateStorageError && err.reason === 'state-too-large') await abandonStateVersion(db, target);
    throw err;
  }
  const done = await inTransaction(db, async (tx) => {
    const { rows } = await tx.query<StateVersionRow>('SELECT * FROM state_versions WHERE deployment_id = $1 AND version = $2 FOR UPDATE', [
      target.deploymentId,
      target.version,
    ]);
    if (rows[0]?.writer !== writer || rows[0].status !== 'writing') throw superseded();
    const mismatch = await storedChunksMatch(tx, target.deploymentId, target.version, idx, chain.digest());
    if (mismatch) {
      throw new StateStorageError('state-corrupt', `state version ${target.version} of ${opts.deploymentId} ${mismatch} after writing; not completed`, {
        deploymentId: opts.deploymentId,
        version: target.version,
      });
    }
    const completed = await tx.query<StateVersionRow>(
      `UPDATE state_versions SET status = 'complete', sha256 = $3, size_bytes = $4, chunk_count = $5, chunks_sha256 = $6, writer = NULL
        WHERE deployment_id = $1 AND version = $2 RETURNING *`,
      [target.deploymentId, target.version, hash.digest(), size, idx, chain.digest()],
    );
    if (rows[0].quarantine === null) {
      await tx.query(
        `UPDATE deployments SET current_state_version = $2 WHERE id = $1 AND (current_state_version IS NULL OR current_state_version < $2)`,
        [target.deploymentId, target.version],
      );
    }
    const dropped = await applyRetention(tx, target.deploymentId, opts.keep);
    return { version: toVersion(completed.rows[0]!), dropped };
  });
  if (done.dropped > 0) reclaimStateSpaceSoon(db);
  return done.version;
}

/** Drops a version its writer gave up on, if that writer still holds it. */
async function abandonStateVersion(db: Db, v: { deploymentId: string; version: number; writer: string }): Promise<void> {
  const { rowCount } = await db.query(`DELETE FROM state_versions WHERE deployment_id = $1 AND version = $2 AND writer = $3 AND status = 'writing'`, [
    v.deploymentId,
    v.version,
    v.writer,
  ]);
  if (rowCount) reclaimStateSpaceSoon(db);
}

const formatBytes = (n: number): string =>
  n >= 1024 * 1024 * 1024 ? `${(n / (1024 * 1024 * 1024)).toFixed(1)} GiB` : n >= 1024 * 1024 ? `${(n / (1024 * 1024)).toFixed(1)} MiB` : `${n} bytes`;

/**
 * Keeps the newest `keep` complete versions (always including the current one) and drops versions whose
 * writing was abandoned (their run has ended without completing them). Their chunks go with them (cascade).
 * Returns how many versions were dropped.
 */
async function applyRetention(tx: Queryable, deploymentId: string, keep: number | undefined): Promise<number> {
  let dropped = 0;
  if (keep !== undefined) {
    const r = await tx.query(
      `DELETE FROM state_versions s WHERE s.deployment_id = $1 AND s.status = 'complete' AND s.quarantine IS NULL
          AND s.version <> coalesce((SELECT current_state_version FROM deployments WHERE id = $1), 0)
          AND s.version NOT IN (SELECT version FROM state_versions WHERE deployment_id = $1 AND status = 'complete' AND quarantine IS NULL
                                ORDER BY version DESC LIMIT $2)`,
      [deploymentId, keep],
    );
    dropped += r.rowCount ?? 0;
  }
  const r = await tx.query(
    `DELETE FROM state_versions s WHERE s.deployment_id = $1 AND s.status = 'writing'
        AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id AND r.status = ANY($2))
        AND (s.quarantine IS NULL OR s.created_at < now() - interval '1 day')`,
    [deploymentId, ACTIVE_RUN_STATUSES],
  );
  return dropped + (r.rowCount ?? 0);
}

/**
 * Makes the space of deleted chunks reusable at once (and gives trailing pages back to the system), rather
 * than when autovacuum gets to the table: a purged multi-GiB state is otherwise dead weight that the next
 * large state does not fit into. One VACUUM at a time per process; a request made meanwhile runs once more after it.
 */
let vacuuming: Promise<void> | undefined;
let vacuumAgain = false;
export function reclaimStateSpace(db: Db): Promise<void> {
  if (vacuuming) {
    vacuumAgain = true;
    return vacuuming;
  }
  vacuuming = (async () => {
    try {
      do {
        vacuumAgain = false;
        await db.query('VACUUM (ANALYZE) state_chunks');
      } while (vacuumAgain);
    } finally {
      vacuuming = undefined;
    }
  })();
  return vacuuming;
}

/** reclaimStateSpace without waiting: space is housekeeping, never a reason to fail what freed it. */
function reclaimStateSpaceSoon(db: Db): void {
  reclaimStateSpace(db).catch(() => undefined);
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

/** The limit of a run's deployment (deployment → template version → installation default), bytes. */
export async function stateLimitBytes(db: Queryable, runId: string, defaultMb: number): Promise<number> {
  const { rows } = await db.query<{ mb: number | null }>(
    `SELECT coalesce(d.state_max_mb, tv.state_max_mb) AS mb FROM runs r JOIN deployments d ON d.id = r.deployment_id
       LEFT JOIN template_versions tv ON tv.template_name = d.template_name AND tv.version = d.template_version
      WHERE r.id = $1`,
    [runId],
  );
  return (rows[0]?.mb ?? defaultMb) * 1024 * 1024;
}

/** A run's /state archived (writeStateVersion) within its deployment's size limit, its phase `archiving` meanwhile. */
export async function archiveStateForRun(
  db: Db,
  box: SecretBox,
  opts: Omit<StateWriteOptions, 'maxBytes'> & { defaultMaxMb: number },
  archive: AsyncIterable<Buffer>,
): Promise<StateVersion> {
  await markRunPhase(db, opts.runId, 'archiving');
  const maxBytes = await stateLimitBytes(db, opts.runId, opts.defaultMaxMb);
  return writeStateVersion(db, box, { ...opts, maxBytes }, archive);
}

/**
 * Checks a complete version before anything of it is trusted or sent: every chunk present and, with `deep`,
 * each chunk's bytes still those written (Postgres hashes them all: about 3 s a GiB). Throws `state-corrupt`.
 */
export async function verifyStateVersion(db: Queryable, deploymentId: string, version: number, opts: { deep?: boolean } = {}): Promise<void> {
  const meta = await completeVersionRow(db, deploymentId, version);
  const corrupt = (why: string) =>
    new StateStorageError('state-corrupt', `state version ${version} of ${deploymentId} is damaged: it ${why}; roll back to an earlier version`, {
      deploymentId,
      version,
    });
  const mismatch = await storedChunksMatch(db, deploymentId, version, meta.chunk_count!, meta.chunks_sha256);
  if (mismatch) throw corrupt(mismatch);
  if (opts.deep) {
    const { rows } = await db.query<{ bad: number | null }>(
      `SELECT min(idx) AS bad FROM state_chunks WHERE deployment_id = $1 AND version = $2 AND digest IS NOT NULL AND sha256(data) <> digest`,
      [deploymentId, version],
    );
    if (rows[0]?.bad != null) throw corrupt(`has chunk ${rows[0].bad} altered since it was written`);
  }
}

async function completeVersionRow(db: Queryable, deploymentId: string, version: number): Promise<StateVersionRow> {
  const { rows } = await db.query<StateVersionRow>(`SELECT * FROM state_versions WHERE deployment_id = $1 AND version = $2 AND status = 'complete'`, [
    deploymentId,
    version,
  ]);
  if (!rows[0]) throw new StateStorageError('state-corrupt', `state version ${version} of ${deploymentId} does not exist`, { deploymentId, version });
  return rows[0];
}

/**
 * The archive of a complete version, decrypted chunk by chunk. Checked first (every chunk there, none
 * foreign); a chunk that fails to decrypt, or a checksum that does not match, fails as `state-corrupt`, a
 * chunk sealed under another key as `state-key-mismatch`, both before the chunk's bytes are yielded.
 */
export async function* readStateVersion(db: Queryable, box: SecretBox, deploymentId: string, version: number): AsyncGenerator<Buffer> {
  const meta = await completeVersionRow(db, deploymentId, version);
  await verifyStateVersion(db, deploymentId, version);
  const corrupt = (why: string) =>
    new StateStorageError('state-corrupt', `state version ${version} of ${deploymentId} is damaged: ${why}; roll back to an earlier version`, {
      deploymentId,
      version,
    });
  const hash = createHash('sha256');
  const fetchChunk = (idx: number) =>
    db.query<{ data: Buffer }>('SELECT data FROM state_chunks WHERE deployment_id = $1 AND version = $2 AND idx = $3', [deploymentId, version, idx]);
  // The next chunk is fetched while the current one is being restored.
  let next = meta.chunk_count! > 0 ? fetchChunk(0) : undefined;
  try {
    for (let idx = 0; idx < meta.chunk_count!; idx++) {
      const chunk = await next!;
      next = idx + 1 < meta.chunk_count! ? fetchChunk(idx + 1) : undefined;
      next?.catch(() => undefined); // observed when awaited; not unhandled if we stop early
      if (!chunk.rows[0]) throw corrupt(`chunk ${idx} is missing`);
      let plain: Buffer;
      try {
        plain = box.open(chunk.rows[0].data, aad(deploymentId, version, idx));
      } catch (err) {
        if (err instanceof SealedValueError && err.code === 'wrong-key') {
          throw new StateStorageError(
            'state-key-mismatch',
            `state version ${version} of ${deploymentId} was sealed under another encryption key than this installation's: ${err.message}. ` +
              'GLIDERGUN_ENCRYPTION_KEY (or its key file) changed since it was written; restore that key. The data is not damaged, and rolling back cannot help',
            { deploymentId, version },
          );
        }
        throw corrupt(`chunk ${idx} does not decrypt (${err instanceof Error ? err.message : String(err)})`);
      }
      hash.update(plain);
      yield plain;
    }
  } finally {
    await next?.catch(() => undefined);
  }
  if (!hash.digest().equals(meta.sha256!)) throw corrupt('the archive fails its checksum');
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
 * refused while a run is active, since that run would archive over it. A damaged source fails as
 * `state-corrupt` and leaves nothing behind.
 */
export async function rollbackStateVersion(
  db: Db,
  box: SecretBox,
  deploymentId: string,
  from: number,
  keep?: number,
): Promise<StateVersion | 'run-active' | 'not-found'> {
  const result = await inTransaction(db, async (tx) => {
    await tx.query('SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE', [deploymentId]);
    const active = await tx.query(`SELECT 1 FROM runs WHERE deployment_id = $1 AND status = ANY($2)`, [deploymentId, ACTIVE_RUN_STATUSES]);
    if (active.rowCount) return 'run-active' as const;
    const source = await tx.query<StateVersionRow>(`SELECT * FROM state_versions WHERE deployment_id = $1 AND version = $2 AND status = 'complete'`, [
      deploymentId,
      from,
    ]);
    const meta = source.rows[0];
    if (!meta) return 'not-found' as const;
    const { rows } = await tx.query<{ version: number }>(
      `INSERT INTO state_versions (deployment_id, version, status)
       VALUES ($1, (SELECT coalesce(max(version), 0) + 1 FROM state_versions WHERE deployment_id = $1), 'writing') RETURNING version`,
      [deploymentId],
    );
    const version = rows[0]!.version;
    const chain = new DigestChain();
    let idx = 0;
    for await (const plain of readStateVersion(tx, box, deploymentId, from)) {
      const sealed = box.seal(plain, aad(deploymentId, version, idx));
      chain.add(sealed);
      await tx.query('INSERT INTO state_chunks (deployment_id, version, idx, data, digest) VALUES ($1, $2, $3, $4, $5)', [
        deploymentId,
        version,
        idx,
        sealed,
        sha256(sealed),
      ]);
      idx++;
    }
    const done = await tx.query<StateVersionRow>(
      `UPDATE state_versions SET status = 'complete', sha256 = $3, size_bytes = $4, chunk_count = $5, chunks_sha256 = $6
        WHERE deployment_id = $1 AND version = $2 RETURNING *`,
      [deploymentId, version, meta.sha256, meta.size_bytes, idx, chain.digest()],
    );
    await tx.query('UPDATE deployments SET current_state_version = $2, updated_at = now() WHERE id = $1', [deploymentId, version]);
    const dropped = await applyRetention(tx, deploymentId, keep);
    return { version: toVersion(done.rows[0]!), dropped };
  });
  if (typeof result === 'string') return result;
  if (result.dropped > 0) reclaimStateSpaceSoon(db);
  return result.version;
}
