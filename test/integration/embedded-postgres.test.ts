import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { migrate } from '../../core/db/migrate.js';
import { createPool } from '../../core/db/pool.js';
import { createTemplate, getTemplate } from '../../core/db/templates.js';
import { freePort } from '../../infra/dev/ports.js';
import { startEmbeddedPostgres } from '../../infra/dev/postgres.js';

/** The dev stack's default database when DATABASE_URL is unset: a real Postgres from npm, kept in a folder. */
describe('the embedded Postgres', () => {
  it('initialises, migrates, keeps its data across a restart, and migrating again changes nothing', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'gg-embedded-pg-'));
    await chmod(dir, 0o755);
    const dataDir = path.join(dir, 'pg');
    const port = await freePort();
    try {
      let pg = await startEmbeddedPostgres({ dataDir, port, database: 'glidergun', out: () => undefined });
      const migrations = (await readdir(path.join(import.meta.dirname, '../../core/db/migrations'))).map((f) => f.replace(/\.sql$/, '')).sort();
      assert.deepEqual(await migrate(pg.url), migrations);
      let db = createPool(pg.url, 1);
      await createTemplate(db, { name: 'kept', description: 'survives restarts', createdBy: 'test' });
      await db.end();
      await pg.stop();

      pg = await startEmbeddedPostgres({ dataDir, port, database: 'glidergun', out: () => undefined });
      assert.deepEqual(await migrate(pg.url), []);
      db = createPool(pg.url, 1);
      assert.equal((await getTemplate(db, 'kept'))?.description, 'survives restarts');
      await db.end();
      await pg.stop();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
