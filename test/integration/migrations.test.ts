import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import pg from 'pg';
import { migrate, MigrationChangedError } from '../../core/db/migrate.js';
import { dropDatabase, ensureDatabase, withDatabase } from '../../infra/dev/postgres.js';
import { env } from '../support/system.js';

describe('database migrations', () => {
  it('apply once, keep each file\'s checksum, and refuse to start when an applied file was changed', async () => {
    const adminUrl = env('GG_TEST_DATABASE_URL');
    const database = `gg_migrations_${randomBytes(4).toString('hex')}`;
    await ensureDatabase(adminUrl, database);
    const url = withDatabase(adminUrl, database);
    const client = new pg.Client({ connectionString: url });
    try {
      const applied = await migrate(url);
      assert.ok(applied.length >= 9, `applied ${applied.join(', ')}`);
      assert.deepEqual(await migrate(url), [], 'nothing twice');
      await client.connect();
      const { rows } = await client.query<{ name: string; sha256: string }>('SELECT name, sha256 FROM migration_checksums ORDER BY name');
      assert.deepEqual(rows.map((r) => r.name), applied);
      assert.ok(rows.every((r) => /^[0-9a-f]{64}$/.test(r.sha256)));

      // As if 003 had been edited after this database applied it.
      await client.query(`UPDATE migration_checksums SET sha256 = repeat('0', 64) WHERE name = $1`, [applied[2]]);
      await assert.rejects(migrate(url), (err: MigrationChangedError) => {
        assert.ok(err instanceof MigrationChangedError);
        assert.match(err.message, new RegExp(`migration ${applied[2]}\\.sql was changed after it was applied`));
        return true;
      });
      // Several processes starting at once all pass.
      await client.query(`UPDATE migration_checksums SET sha256 = $2 WHERE name = $1`, [applied[2], rows[2]!.sha256]);
      await Promise.all([migrate(url), migrate(url), migrate(url)]);
    } finally {
      await client.end().catch(() => undefined);
      await dropDatabase(adminUrl, database);
    }
  });
});
