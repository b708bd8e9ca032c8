import { newId } from '../ids.js';
import type { Queryable } from './pool.js';

/** An author's files as validated and normalized (core/template-sources): a deterministic tar.gz. */
export interface StoredSource {
  id: string;
  sha256: string;
  format: 'zip' | 'tgz' | 'git';
  files: number;
  bytes: number;
  createdBy: string;
  createdAt: string;
}

interface SourceRow {
  id: string;
  sha256: Buffer;
  format: StoredSource['format'];
  files: number;
  bytes: string;
  created_by: string;
  created_at: Date;
}

const toSource = (r: SourceRow): StoredSource => ({
  id: r.id,
  sha256: r.sha256.toString('hex'),
  format: r.format,
  files: r.files,
  bytes: Number(r.bytes),
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
});

export async function storeSource(
  db: Queryable,
  s: { format: StoredSource['format']; archive: Buffer; sha256: string; files: number; bytes: number; createdBy: string },
): Promise<StoredSource> {
  const { rows } = await db.query<SourceRow>(
    `INSERT INTO template_sources (id, sha256, format, files, bytes, archive, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)
     RETURNING id, sha256, format, files, bytes, created_by, created_at`,
    [newId('src'), Buffer.from(s.sha256, 'hex'), s.format, s.files, s.bytes, s.archive, s.createdBy],
  );
  return toSource(rows[0]!);
}

export async function getSource(db: Queryable, id: string): Promise<StoredSource | undefined> {
  const { rows } = await db.query<SourceRow>('SELECT id, sha256, format, files, bytes, created_by, created_at FROM template_sources WHERE id = $1', [id]);
  return rows[0] && toSource(rows[0]);
}

export async function readSourceArchive(db: Queryable, id: string): Promise<Buffer | undefined> {
  const { rows } = await db.query<{ archive: Buffer }>('SELECT archive FROM template_sources WHERE id = $1', [id]);
  return rows[0]?.archive;
}
