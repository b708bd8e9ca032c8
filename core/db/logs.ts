import type { Queryable } from './pool.js';

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
