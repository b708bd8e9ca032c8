import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureAdminToken } from '../../core/bootstrap.js';
import { migrate } from '../../core/db/migrate.js';
import { createPool } from '../../core/db/pool.js';
import { createToken, verifyToken } from '../../core/db/tokens.js';
import { adminUrlOf, dropDatabase, ensureDatabase, withDatabase } from '../../infra/dev/postgres.js';
import { createDeployment, registerExampleTemplate, uniqueName } from '../support/fixtures.js';
import { apiClient, env, startTestSystem, type TestSystem } from '../support/system.js';

type OpenApi = { paths: Record<string, Record<string, { security?: unknown[] }>> };

describe('authentication and roles', () => {
  let sys: TestSystem;
  let template: string;
  let deployment: string;

  before(async () => {
    sys = await startTestSystem({ nodeWorker: false });
    template = await registerExampleTemplate(sys.call);
    deployment = await createDeployment(sys.call, template, { message: 'x' }, { kind: 'node', node: sys.nodeId });
  });
  after(async () => {
    await sys.stop();
  });

  const as = (role: keyof TestSystem['tokens']) => apiClient(sys.api.url, sys.tokens[role]);
  /** Rows this file's requests could have written (other files share the database and write at the same time). */
  const written = async (templateNames: string[]) => {
    const q = async (sql: string, args: unknown[]) => Number((await sys.db.query<{ n: string }>(sql, args)).rows[0]!.n);
    return {
      templates: await q('SELECT count(*) n FROM templates WHERE name = ANY($1)', [templateNames]),
      deployments: await q('SELECT count(*) n FROM deployments WHERE template_name = $1', [template]),
      runs: await q('SELECT count(*) n FROM runs WHERE deployment_id = $1', [deployment]),
    };
  };

  it('answers 401 on every protected route without a token, or with a malformed or unknown one', async () => {
    const doc = (await (await fetch(`${sys.api.url}/openapi.json`)).json()) as OpenApi;
    const ids = { id: deployment, name: template, version: '1' };
    let checked = 0;
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        if (!op.security) continue;
        const url = p.replace(/\{(\w+)\}/g, (_, k: string) => ids[k as keyof typeof ids]);
        for (const header of [undefined, 'Bearer nope', 'Basic dXNlcjpwYXNz', `Bearer ggt_aaaaaaaaaaaa_${'b'.repeat(40)}`]) {
          const res = await fetch(`${sys.api.url}${url}`, {
            method: method.toUpperCase(),
            headers: { 'content-type': 'application/json', ...(header ? { authorization: header } : {}) },
            body: method === 'get' ? undefined : '{}',
          });
          assert.equal(res.status, 401, `${method} ${url} with ${header}`);
          const body = (await res.json()) as { code: string };
          assert.equal(body.code, 'UNAUTHENTICATED');
          checked++;
        }
      }
    }
    assert.ok(checked >= 40);
  });

  it('lets each role do its work and refuses the rest with 403, writing nothing', async () => {
    const attempted = [uniqueName('v'), uniqueName('o')];
    const before = await written(attempted);
    // viewer: reads everything, writes nothing
    assert.equal((await as('viewer')('GET', `/v1/deployments/${deployment}`)).status, 200);
    assert.equal((await as('viewer')('GET', '/v1/templates')).status, 200);
    for (const [method, url, body] of [
      ['POST', '/v1/templates', { name: attempted[0] }],
      ['POST', '/v1/deployments', { template: { name: template }, parameters: { message: 'x' } }],
      ['POST', `/v1/deployments/${deployment}/runs`, { action: 'deploy' }],
      ['POST', '/v1/tokens', { name: uniqueName('t'), role: 'admin' }],
    ] as const) {
      const res = await as('viewer')<{ code: string; details: { allowed: string[] } }>(method, url, body);
      assert.equal(res.status, 403, `${method} ${url}`);
      assert.equal(res.body.code, 'FORBIDDEN');
    }
    // author: templates, not deployments or runs
    const operatorOnly = await as('author')<{ code: string }>('POST', `/v1/deployments/${deployment}/runs`, { action: 'deploy' });
    assert.equal(operatorOnly.status, 403);
    // operator: deployments and runs, not templates or tokens
    assert.equal((await as('operator')('POST', '/v1/templates', { name: attempted[1] })).status, 403);
    assert.equal((await as('operator')('GET', '/v1/tokens')).status, 403);
    assert.deepEqual(await written(attempted), before, 'no refused request wrote anything');
    assert.equal(before.templates, 0);
    assert.equal((await as('author')('POST', '/v1/templates', { name: uniqueName('a') })).status, 201);
  });

  it('records who asked on what they create', async () => {
    const name = uniqueName('who');
    const created = await as('author')<{ createdBy: string }>('POST', '/v1/templates', { name });
    assert.match(created.body.createdBy, /^author-/);
    const dep = await as('operator')<{ id: string; createdBy: string }>('POST', '/v1/deployments', {
      template: { name: template },
      parameters: { message: 'who' },
      target: { kind: 'node', node: sys.nodeId },
    });
    assert.match(dep.body.createdBy, /^operator-/);
  });

  it('refuses expired and revoked tokens, and an admin manages tokens through the API', async () => {
    const expired = await createToken(sys.db, { name: uniqueName('old'), role: 'admin', createdBy: 'test', expiresAt: new Date(Date.now() - 1000) });
    const res = await apiClient(sys.api.url, expired.secret)<{ code: string; message: string }>('GET', '/v1/templates');
    assert.equal(res.status, 401);
    assert.match(res.body.message, /expired/);

    const made = await sys.call<{ id: string; token: string; role: string }>('POST', '/v1/tokens', { name: uniqueName('ci'), role: 'viewer', expiresInSeconds: 3600 });
    assert.equal(made.status, 201);
    assert.equal(made.headers.get('cache-control'), 'no-store');
    const ci = apiClient(sys.api.url, made.body.token);
    assert.equal((await ci('GET', '/v1/templates')).status, 200);
    const listed = await sys.call<{ items: Record<string, unknown>[] }>('GET', '/v1/tokens');
    assert.ok(listed.body.items.some((t) => t.id === made.body.id));
    assert.ok(listed.body.items.every((t) => !('token' in t) && !('secretHash' in t)), 'no secret is ever listed');
    const dump = JSON.stringify((await sys.db.query('SELECT * FROM tokens')).rows);
    assert.ok(!dump.includes(made.body.token.split('_')[2]!), 'only a hash of the secret is stored');

    const revoked = await sys.call<{ revokedAt: string | null }>('POST', `/v1/tokens/${made.body.id}/revoke`);
    assert.equal(revoked.status, 200);
    assert.ok(revoked.body.revokedAt);
    const after = await ci<{ code: string; message: string }>('GET', '/v1/templates');
    assert.equal(after.status, 401);
    assert.match(after.body.message, /revoked/);
    assert.equal((await sys.call('POST', '/v1/tokens/zzzzzzzzzzzz/revoke')).status, 404);
    assert.equal((await sys.call('POST', '/v1/tokens', { name: uniqueName('x'), role: 'root' })).status, 400);
  });

  it('makes an admin token at first start, in a file only its owner can read', async () => {
    const database = `gg_bootstrap_${process.pid}_${Date.now().toString(36)}`;
    const adminUrl = adminUrlOf(env('GG_TEST_DATABASE_URL'));
    await ensureDatabase(adminUrl, database);
    const url = withDatabase(env('GG_TEST_DATABASE_URL'), database);
    const db = createPool(url, 2);
    try {
      await migrate(url);
      const file = path.join(os.tmpdir(), `gg-admin-token-${process.pid}`);
      assert.deepEqual(await ensureAdminToken(db, file), { state: 'created', file });
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      const verified = await verifyToken(db, (await readFile(file, 'utf8')).trim());
      assert.ok(verified.ok && verified.token.role === 'admin');
      assert.deepEqual(await ensureAdminToken(db, file), { state: 'existing', file });
      assert.equal(Number((await db.query<{ n: string }>('SELECT count(*) n FROM tokens')).rows[0]!.n), 1, 'a restart makes no second token');
    } finally {
      await db.end();
      await dropDatabase(adminUrl, database);
    }
  });
});
