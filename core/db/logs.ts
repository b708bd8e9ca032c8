import { inTransaction, type Db, type Queryable } from './pool.js';

/** stdout, stderr, or a file the template wrote under /logs (`file:<path relative to /logs>`). */
export type LogStream = 'stdout' | 'stderr' | `file:${string}`;

export interface LogChunk {
  seq: number;
  stream: LogStream;
  offset: number;
  at: string;
  data: Buffer;
}

/** Idempotent: a chunk already stored at that offset is left as it is. */
export async function appendLogChunk(
  db: Queryable,
  c: { runId: string; stream: LogStream; offset: number; at: Date; data: Buffer },
): Promise<void> {
  await db.query(
    `INSERT INTO run_log_chunks (run_id, stream, start_offset, at, data) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (run_id, stream, start_offset) DO NOTHING`,
    [c.runId, c.stream, c.offset, c.at, c.data],
  );
}

/** A piece of a stream at its byte offset, as a run's runner sends it. */
export interface LogFrame {
  stream: LogStream;
  offset: number;
  data: Buffer;
}

export type LogFramesOutcome =
  | { stored: true }
  /** A frame starts past what is stored (`stream`): nothing of the call was stored. */
  | { stored: false; reason: 'gap'; stream: LogStream; lengths: Partial<Record<LogStream, number>> }
  /** A stream would grow past maxStreamBytes: nothing of the call was stored. */
  | { stored: false; reason: 'over-cap'; stream: LogStream; lengths: Partial<Record<LogStream, number>> };

/**
 * Stores frames of every stream of a run in their order, all or none: `seq` follows the frames, so the
 * combined log shows the streams in the order they were written. Exactly once by offset: what a stream
 * already holds is skipped, a frame past it is refused (`gap`). Consecutive pieces of one stream become
 * one row.
 */
export async function appendLogFrames(db: Db, runId: string, frames: readonly LogFrame[], opts: { maxStreamBytes: number; at: Date }): Promise<LogFramesOutcome> {
  return inTransaction(db, async (tx) => {
    // One writer per run at a time: two calls (a retry beside a call still running) must not interleave,
    // and a reader following by seq must never see a lower seq committed after a higher one.
    await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`glider-gun run log ${runId}`]);
    const lengths = await storedLogLengths(tx, runId);
    const next = { ...lengths };
    const rows: { stream: LogStream; offset: number; parts: Buffer[] }[] = [];
    for (const f of frames) {
      const held = next[f.stream] ?? 0;
      if (f.offset > held) return { stored: false, reason: 'gap', stream: f.stream, lengths };
      const fresh = f.data.subarray(held - f.offset);
      if (fresh.length === 0) continue;
      if (held + fresh.length > opts.maxStreamBytes) return { stored: false, reason: 'over-cap', stream: f.stream, lengths };
      const last = rows.at(-1);
      if (last?.stream === f.stream) last.parts.push(fresh);
      else rows.push({ stream: f.stream, offset: held, parts: [fresh] });
      next[f.stream] = held + fresh.length;
    }
    if (rows.length === 0) return { stored: true };
    // seq values taken first and given out in frame order: an INSERT … SELECT has no documented order in
    // which its rows draw from the identity.
    const seqs = await tx.query<{ seq: string }>(`SELECT nextval(pg_get_serial_sequence('run_log_chunks', 'seq')) AS seq FROM generate_series(1, $1)`, [rows.length]);
    const ordered = seqs.rows.map((r) => BigInt(r.seq)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    await tx.query(
      `INSERT INTO run_log_chunks (seq, run_id, stream, start_offset, at, data) OVERRIDING SYSTEM VALUE
       SELECT u.seq, $1, u.stream, u.start_offset, $2, u.data
         FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::bytea[]) AS u (seq, stream, start_offset, data)`,
      [runId, opts.at, ordered.map(String), rows.map((r) => r.stream), rows.map((r) => r.offset), rows.map((r) => Buffer.concat(r.parts))],
    );
    return { stored: true };
  });
}

/** How many bytes of each stream are stored: where a resumed collector continues. */
export async function storedLogLengths(db: Queryable, runId: string): Promise<Partial<Record<LogStream, number>>> {
  const { rows } = await db.query<{ stream: LogStream; length: string }>(
    `SELECT stream, max(start_offset + length(data)) AS length FROM run_log_chunks WHERE run_id = $1 GROUP BY stream`,
    [runId],
  );
  const lengths: Partial<Record<LogStream, number>> = {};
  for (const r of rows) lengths[r.stream] = Number(r.length);
  return lengths;
}

/** Chunks in the order they were stored, after `afterSeq`. */
export async function readLogChunks(
  db: Queryable,
  runId: string,
  opts: { afterSeq?: number; limit: number; stream?: LogStream | undefined },
): Promise<LogChunk[]> {
  const { rows } = await db.query<{ seq: string; stream: LogStream; start_offset: string; at: Date; data: Buffer }>(
    `SELECT seq, stream, start_offset, at, data FROM run_log_chunks
      WHERE run_id = $1 AND seq > $2 AND ($4::text IS NULL OR stream = $4) ORDER BY seq LIMIT $3`,
    [runId, opts.afterSeq ?? 0, opts.limit, opts.stream ?? null],
  );
  return rows.map((r) => ({ seq: Number(r.seq), stream: r.stream, offset: Number(r.start_offset), at: r.at.toISOString(), data: r.data }));
}
