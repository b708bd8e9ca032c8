/**
 * What `npm start` prints about Temporal and Postgres (infra/dev/summary.ts), tried as a newcomer would:
 * the suggested Temporal command is run exactly as printed, from a shell whose PATH has no `temporal`,
 * and the printed Postgres URL is connected to. Against the suite's own Temporal and Postgres.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { postgresLine, temporalLines } from '../../infra/dev/summary.js';
import { env } from '../support/system.js';

const sh = promisify(execFile);

describe("what npm start prints about Temporal and Postgres", () => {
  it('suggests a Temporal command that works as printed, with no temporal on PATH', async () => {
    const lines = temporalLines(env('GG_TEST_TEMPORAL_ADDRESS'), env('GG_TEST_TEMPORAL_CLI'));
    const command = /\(try: (.+)\)$/.exec(lines[0] ?? '')?.[1];
    assert.ok(command, `a command to try: ${lines.join(' | ')}`);
    // A newcomer's shell: the system's folders only, not the cache the CLI was built into.
    const bare = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/' };
    await assert.rejects(sh('sh', ['-c', 'command -v temporal'], { env: bare }), 'this check needs a PATH without temporal');
    await sh('sh', ['-c', command], { env: bare }); // rejects on a non-zero exit ("temporal: not found" is 127)
    // The folder it names for PATH holds the CLI.
    const dir = /export PATH="([^"]+):\$PATH"/.exec(lines[1] ?? '')?.[1];
    assert.equal(dir && path.join(dir, 'temporal'), env('GG_TEST_TEMPORAL_CLI'));
    await sh('sh', ['-c', `export PATH="${dir}:$PATH"; temporal workflow list --address ${env('GG_TEST_TEMPORAL_ADDRESS')} --limit 1`], { env: bare });
  });

  it('prints the Postgres URL, which connects; the password of DATABASE_URL is not printed', async () => {
    const line = postgresLine(env('GG_TEST_DATABASE_URL'), { dataDir: '.gg-data/postgres' });
    const url = /^Postgres\s+(\S+)/.exec(line)?.[1];
    assert.ok(url, line);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      assert.equal((await client.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one, 1);
    } finally {
      await client.end();
    }
    const given = postgresLine('postgres://app:s3cret-value@db.example:5432/gg', undefined);
    assert.doesNotMatch(given, /s3cret-value/);
    assert.match(given, /^Postgres\s+postgres:\/\/app:\*\*\*@db\.example:5432\/gg\s/);
  });
});
