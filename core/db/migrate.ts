import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import pg from 'pg';

const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'migrations');

/** A migration file differs from the one applied: the schema is not what the code expects. */
export class MigrationChangedError extends Error {
  override name = 'MigrationChangedError';
}

/**
 * Applies pending versioned SQL migrations; safe to call from several processes at once (it takes a lock).
 * Each applied file's sha256 is kept, and a file changed after it was applied stops the start: editing an
 * applied migration never reaches an installed database, so its schema and the code would quietly differ.
 */
export async function migrate(databaseUrl: string, log: (line: string) => void = () => undefined): Promise<string[]> {
  await verifyChecksums(databaseUrl);
  const applied = await runner({
    databaseUrl,
    dir: MIGRATIONS_DIR,
    direction: 'up',
    migrationsTable: 'pgmigrations',
    checkOrder: true,
    singleTransaction: true,
    // The API and the workers start together: the others wait for the first, then find nothing to do.
    advisoryLockMode: 'wait',
    logger: { info: log, warn: log, error: log, debug: () => undefined },
    verbose: false,
  });
  await verifyChecksums(databaseUrl);
  return applied.map((m) => m.name);
}

/** Records the checksum of each applied migration that has none yet, and compares the others. */
async function verifyChecksums(databaseUrl: string): Promise<void> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql')).sort();
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows: tables } = await client.query<{ t: string | null }>(`SELECT to_regclass('pgmigrations')::text AS t`);
    if (!tables[0]?.t) return; // a new database: nothing applied yet
    // Several processes start at once; CREATE TABLE IF NOT EXISTS alone races with itself.
    await client.query(`SELECT pg_advisory_lock(hashtext('glider-gun migration checksums'))`);
    await client.query(`CREATE TABLE IF NOT EXISTS migration_checksums (
      name text PRIMARY KEY, sha256 text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())`);
    const { rows: applied } = await client.query<{ name: string }>('SELECT name FROM pgmigrations');
    const appliedNames = new Set(applied.map((r) => r.name));
    for (const file of files) {
      const name = file.slice(0, -'.sql'.length);
      if (!appliedNames.has(name)) continue;
      const sha256 = createHash('sha256').update(await readFile(path.join(MIGRATIONS_DIR, file))).digest('hex');
      await client.query('INSERT INTO migration_checksums (name, sha256) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [name, sha256]);
      const { rows } = await client.query<{ sha256: string }>('SELECT sha256 FROM migration_checksums WHERE name = $1', [name]);
      if (rows[0]?.sha256 !== sha256) {
        throw new MigrationChangedError(
          `migration ${file} was changed after it was applied to this database (sha256 ${rows[0]?.sha256} then, ${sha256} now): ` +
            'restore the file as it was and add a new migration for the change',
        );
      }
    }
  } finally {
    await client.end();
  }
}
