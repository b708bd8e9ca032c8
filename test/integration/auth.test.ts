import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureAdminToken } from '../../core/bootstrap.js';
import { migrate } from '../../core/db/migrate.js';
import { createPool } from '../../core/db/pool.js';
import { ROLES, createToken, verifyToken, type Role } from '../../core/db/tokens.js';
import { adminUrlOf, dropDatabase, ensureDatabase, withDatabase } from '../../infra/dev/postgres.js';
import { createDeployment, registerExampleTemplate, uniqueName } from '../support/fixtures.js';
import { apiClient, env, startTestSystem, type TestSystem } from '../support/system.js';

type OpenApi = { paths: Record<string, Record<string, { security?: Record<string, unknown>[]; 'x-roles'?: string[]; requestBody?: unknown }>> };

/** Who may call what, as role lists: the product names the same four lists in api/http/roles.ts. */
const MAY = {
  read: ['admin', 'author', 'operator', 'viewer'],
  author: ['admin', 'author'],
  operate: ['admin', 'operator'],
  admin: ['admin'],
} as const satisfies Record<string, readonly Role[]>;

/**
 * Every route that takes a user's token, and who may call it, written out here rather than read from the product:
 * a route whose roles widen or narrow, or a route added without a line here, fails the matrix below.
 */
const EXPECTED_ROLES: Record<string, keyof typeof MAY> = {
  'POST /v1/tokens': 'admin',
  'GET /v1/tokens': 'admin',
  'POST /v1/tokens/{id}/revoke': 'admin',
  'POST /v1/template-types': 'author',
  'GET /v1/template-types': 'read',
  'GET /v1/template-types/{name}': 'read',
  'POST /v1/template-types/{name}/versions': 'author',
  'GET /v1/template-types/{name}/versions/{version}': 'read',
  'PUT /v1/template-types/{name}/versions/{version}': 'author',
  'POST /v1/templates': 'author',
  'GET /v1/templates': 'read',
  'GET /v1/templates/{name}': 'read',
  'POST /v1/templates/{name}/versions': 'author',
  'POST /v1/templates/{name}/adhoc-versions': 'author',
  'GET /v1/templates/{name}/versions/{version}': 'read',
  'POST /v1/templates/{name}/builds': 'author',
  'GET /v1/templates/{name}/builds': 'read',
  'POST /v1/template-sources': 'author',
  'GET /v1/template-sources/{id}': 'read',
  'GET /v1/builds/{id}': 'read',
  'GET /v1/builds/{id}/logs': 'read',
  'POST /v1/builds/{id}/cancel': 'author',
  'POST /v1/deployments': 'operate',
  'GET /v1/deployments': 'read',
  'GET /v1/deployments/{id}': 'read',
  'DELETE /v1/deployments/{id}': 'operate',
  'POST /v1/deployments/{id}/upgrade': 'operate',
  'POST /v1/deployments/{id}/runs': 'operate',
  'GET /v1/deployments/{id}/runs': 'read',
  'GET /v1/runs/{id}': 'read',
  'GET /v1/runs/{id}/logs': 'read',
  'POST /v1/runs/{id}/cancel': 'operate',
  'POST /v1/nodes': 'admin',
  'GET /v1/nodes': 'read',
  'GET /v1/nodes/{id}': 'read',
  'POST /v1/nodes/{id}/enrolment-token': 'admin',
  'POST /v1/nodes/{id}/revoke': 'admin',
  'GET /v1/deployments/{id}/state-versions': 'read',
  'POST /v1/deployments/{id}/state-versions/{version}/rollback': 'operate',
  'GET /v1/deployments/{id}/state-versions/{version}/archive': 'operate',
};

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
          // The node API takes no user's token at all: only the node gateway's word (api/node/gateway-auth.ts).
          const viaGateway = op.security.some((s) => 'nodeGateway' in s);
          assert.equal(body.code, viaGateway ? 'NODE_IDENTITY_REQUIRED' : 'UNAUTHENTICATED', `${method} ${url} with ${header}`);
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

  it('answers each role on every route as the expected table says: 403 FORBIDDEN outside the route\'s roles, through to the handler inside them', async () => {
    const doc = (await (await fetch(`${sys.api.url}/openapi.json`)).json()) as OpenApi;
    // The product's table: each operation's roles as the route table declares them (the document is generated from it).
    const declared = new Map<string, { path: string; method: string; roles: string[]; hasBody: boolean }>();
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        if (!op.security?.some((s) => 'bearer' in s)) continue; // public routes, and the agent API (a run's credential, not a role)
        declared.set(`${method.toUpperCase()} ${p}`, { path: p, method: method.toUpperCase(), roles: op['x-roles'] ?? [], hasBody: op.requestBody !== undefined });
      }
    }
    assert.deepEqual([...declared.keys()].sort(), Object.keys(EXPECTED_ROLES).sort(), 'every route with a bearer token has a line in EXPECTED_ROLES');
    for (const [key, { roles }] of declared) assert.deepEqual([...roles].sort(), [...MAY[EXPECTED_ROLES[key]!]].sort(), `${key}: declared roles`);

    // And the router answers as the expected table says. Ids name nothing and bodies are invalid ([] is no object), so a
    // request let through ends in 400 or 404 (or a read) and changes nothing; the role is checked before either.
    const ids = { id: 'zzzzzzzzzzzz', name: uniqueName('none'), version: '1' };
    let refused = 0;
    let allowed = 0;
    for (const [key, { path: p, method }] of declared) {
      const url = p.replace(/\{(\w+)\}/g, (_, k: string) => ids[k as keyof typeof ids]);
      const may: readonly Role[] = MAY[EXPECTED_ROLES[key]!];
      for (const role of ROLES) {
        const res = await as(role)<{ code?: string; details?: { role: string } } | undefined>(method, url, method === 'GET' ? undefined : '[]');
        if (may.includes(role)) {
          assert.ok(![401, 403].includes(res.status) && res.status < 500, `${role} ${key}: let through, got ${res.status} ${JSON.stringify(res.body)}`);
          assert.notEqual(res.body?.code, 'ROUTE_NOT_FOUND', `${role} ${key}: the route is mounted`);
          allowed++;
        } else {
          assert.equal(res.status, 403, `${role} ${key}: refused`);
          assert.equal(res.body?.code, 'FORBIDDEN', `${role} ${key}`);
          assert.equal(res.body?.details?.role, role, `${role} ${key}`);
          refused++;
        }
      }
    }
    assert.equal(allowed + refused, Object.keys(EXPECTED_ROLES).length * ROLES.length);
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
