import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createDeployment, registerExampleTemplate, uniqueName } from '../support/fixtures.js';
import { freePort } from '../../infra/dev/ports.js';
import { apiClient, env, startTestSystem, type TestSystem } from '../support/system.js';

interface ErrorBody {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

/** Bad input gets a clear 4xx with a code and a message, and nothing is written. */
describe('the API refuses bad input', () => {
  let sys: TestSystem;
  let call: ReturnType<typeof apiClient>;
  let template: string;

  /** Rows that belong to this file's template (other test files write to the same database at the same time). */
  const counts = async () => {
    const { rows } = await sys.db.query<{ v: string; d: string; r: string }>(
      `SELECT (SELECT count(*) FROM template_versions WHERE template_name = $1) v,
              (SELECT count(*) FROM deployments WHERE template_name = $1) d,
              (SELECT count(*) FROM runs JOIN deployments ON deployments.id = runs.deployment_id WHERE template_name = $1) r`,
      [template],
    );
    return rows[0];
  };
  const templateExists = async (name: string) => (await sys.db.query('SELECT 1 FROM templates WHERE name = $1', [name])).rowCount === 1;

  /** Asserts a clear refusal: the status, a machine-readable code, a message, and no stack trace. */
  async function refused(status: number, code: string, request: Promise<{ status: number; body: unknown }>) {
    const res = await request;
    const body = res.body as ErrorBody;
    assert.equal(res.status, status, JSON.stringify(body));
    assert.equal(body.code, code, JSON.stringify(body));
    assert.equal(typeof body.message, 'string');
    assert.ok(body.message.length > 0);
    assert.ok(!('stack' in body));
    return body;
  }

  before(async () => {
    sys = await startTestSystem();
    call = sys.call;
    template = await registerExampleTemplate(call);
  });
  after(async () => {
    await sys.stop();
  });

  const node = () => ({ kind: 'node', node: sys.nodeId });

  it('refuses deployments of unknown templates and versions', async () => {
    await refused(404, 'TEMPLATE_NOT_FOUND', call('POST', '/v1/deployments', { template: { name: 'no-such-template' }, parameters: {}, target: node() }));
    await refused(404, 'TEMPLATE_VERSION_NOT_FOUND', call('POST', '/v1/deployments', { template: { name: template, version: 99 }, parameters: { message: 'x' }, target: node() }));
    const bare = uniqueName('bare');
    await call('POST', '/v1/templates', { name: bare });
    await refused(404, 'TEMPLATE_VERSION_NOT_FOUND', call('POST', '/v1/deployments', { template: { name: bare }, target: node() }));
  });

  it('refuses missing, mistyped and undeclared parameters before anything is written', async () => {
    const before = await counts();
    const missing = await refused(422, 'INVALID_PARAMETERS', call('POST', '/v1/deployments', { template: { name: template }, parameters: {}, target: node() }));
    assert.deepEqual(missing.details?.problems, [{ parameter: 'message', problem: 'is required' }]);
    const mistyped = await refused(422, 'INVALID_PARAMETERS', call('POST', '/v1/deployments', { template: { name: template }, parameters: { message: 'x', exit_code: 'three', extra: 1 }, target: node() }));
    assert.deepEqual(mistyped.details?.problems, [
      { parameter: 'extra', problem: 'is not declared by the template' },
      { parameter: 'exit_code', problem: 'must be of type integer, not string' },
    ]);
    assert.deepEqual(await counts(), before);
  });

  it('refuses unknown fields, wrong types, malformed JSON and other content types', async () => {
    const before = await counts();
    const unknown = await refused(400, 'VALIDATION_FAILED', call('POST', '/v1/deployments', { template: { name: template }, parameters: { message: 'x' }, target: node(), colour: 'red' }));
    assert.match(unknown.message, /colour/);
    await refused(400, 'VALIDATION_FAILED', call('POST', '/v1/deployments', { template: { name: template }, parameters: 'x', target: node() }));
    await refused(400, 'VALIDATION_FAILED', call('POST', '/v1/deployments', { template: { name: template }, parameters: {}, target: { kind: 'moon' } }));
    await refused(400, 'MALFORMED_JSON', call('POST', '/v1/deployments', '{"template": {'));
    await refused(415, 'UNSUPPORTED_MEDIA_TYPE', call('POST', '/v1/templates', 'name=x', { 'content-type': 'application/x-www-form-urlencoded' }));
    await refused(400, 'VALIDATION_FAILED', call('POST', '/v1/templates', []));
    await refused(413, 'PAYLOAD_TOO_LARGE', call('POST', '/v1/templates', { name: 'big', description: 'x'.repeat(2 * 1024 * 1024) }));
    assert.deepEqual(await counts(), before);
    assert.equal(await templateExists('big'), false);
  });

  it('refuses names and ids that are not valid Kubernetes/Docker names', async () => {
    const before = await counts();
    await refused(400, 'VALIDATION_FAILED', call('POST', '/v1/templates', { name: 'Not_Valid' }));
    await refused(400, 'VALIDATION_FAILED', call('POST', '/v1/templates', { name: `a${'b'.repeat(60)}` }));
    await refused(400, 'VALIDATION_FAILED', call('GET', '/v1/deployments/not-an-id'));
    await refused(400, 'VALIDATION_FAILED', call('GET', '/v1/runs/dep-aaaaaaaaaaaa'));
    assert.deepEqual(await counts(), before);
    assert.equal(await templateExists('not_valid'), false);
  });

  it('answers 404 with a code for unknown resources and routes', async () => {
    await refused(404, 'DEPLOYMENT_NOT_FOUND', call('GET', '/v1/deployments/dep-aaaaaaaaaaaa'));
    await refused(404, 'DEPLOYMENT_NOT_FOUND', call('POST', '/v1/deployments/dep-aaaaaaaaaaaa/runs', { action: 'deploy' }));
    await refused(404, 'RUN_NOT_FOUND', call('GET', '/v1/runs/run-aaaaaaaaaaaa'));
    await refused(404, 'TEMPLATE_NOT_FOUND', call('GET', '/v1/templates/nothing-here'));
    await refused(404, 'TEMPLATE_VERSION_NOT_FOUND', call('GET', `/v1/templates/${template}/versions/42`));
    await refused(404, 'ROUTE_NOT_FOUND', call('GET', '/v1/nothing'));
  });

  it('refuses actions the template does not declare, without starting anything', async () => {
    const id = await createDeployment(call, template, { message: 'x' }, node());
    const before = await counts();
    const res = await refused(422, 'UNKNOWN_ACTION', call('POST', `/v1/deployments/${id}/runs`, { action: 'upgrade' }));
    assert.deepEqual(res.details?.supported, ['deploy', 'destroy']);
    await refused(400, 'VALIDATION_FAILED', call('POST', `/v1/deployments/${id}/runs`, { action: 'Deploy; rm -rf /' }));
    assert.deepEqual(await counts(), before);
    const containers = await sys.docker.listContainers({ all: true, filters: { label: [`io.glider-gun.deployment=${id}`] } });
    assert.equal(containers.length, 0);
  });

  it('refuses unknown nodes and the cluster target when Kubernetes is not configured', async () => {
    await refused(404, 'NODE_NOT_FOUND', call('POST', '/v1/deployments', { template: { name: template }, parameters: { message: 'x' }, target: { kind: 'node', node: 'nowhere' } }));
    await refused(422, 'TARGET_UNAVAILABLE', call('POST', '/v1/deployments', { template: { name: template }, parameters: { message: 'x' }, target: { kind: 'cluster' } }));
  });

  it('refuses a duplicate template and invalid declarations', async () => {
    await refused(409, 'TEMPLATE_EXISTS', call('POST', '/v1/templates', { name: template }));
    const before = await counts();
    await refused(422, 'INVALID_PARAMETERS', call('POST', `/v1/templates/${template}/versions`, { image: 'x:1', parameters: [{ name: 'a', type: 'integer', default: 'one' }] }));
    await refused(400, 'VALIDATION_FAILED', call('POST', `/v1/templates/${template}/versions`, { image: 'x:1', parameters: [{ name: 'a', type: 'date' }] }));
    await refused(400, 'VALIDATION_FAILED', call('POST', `/v1/templates/${template}/versions`, { image: '--privileged' }));
    await refused(400, 'VALIDATION_FAILED', call('POST', `/v1/templates/${template}/versions`, { image: 'x:1', actions: ['deploy', 'deploy'] }));
    assert.deepEqual(await counts(), before);
  });

  it('pages deployments with a stable cursor and filters them', async () => {
    const own = uniqueName('paged');
    await call('POST', '/v1/templates', { name: own });
    await call('POST', `/v1/templates/${own}/versions`, { image: 'example:1' });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await createDeployment(call, own, {}, node()));
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = `/v1/deployments?template=${own}&limit=2${cursor ? `&cursor=${cursor}` : ''}`;
      const page = await call<{ items: { id: string }[]; nextCursor: string | null }>('GET', query);
      assert.equal(page.status, 200);
      seen.push(...page.body.items.map((d) => d.id));
      cursor = page.body.nextCursor;
    } while (cursor);
    assert.deepEqual(seen, ids);
    const none = await call<{ items: unknown[] }>('GET', `/v1/deployments?template=${own}&status=running`);
    assert.deepEqual(none.body.items, []);
    const onNode = await call<{ items: { id: string }[] }>('GET', `/v1/deployments?template=${own}&target=node:${sys.nodeId}&limit=500`);
    assert.deepEqual(onNode.body.items.map((d) => d.id), ids);
    const onCluster = await call<{ items: unknown[] }>('GET', `/v1/deployments?template=${own}&target=cluster`);
    assert.deepEqual(onCluster.body.items, []);
    await refused(400, 'VALIDATION_FAILED', call('GET', '/v1/deployments?cursor=garbage'));
    await refused(400, 'VALIDATION_FAILED', call('GET', '/v1/deployments?status=sleeping'));
    await refused(400, 'VALIDATION_FAILED', call('GET', '/v1/deployments?limit=0'));
  });

  it('stays up after all of the above', async () => {
    const res = await fetch(`${sys.api.url}/healthz`);
    assert.equal(res.status, 200);
  });

  it('reports health of its dependencies without authentication', async () => {
    const res = await call<{ status: string; checks: Record<string, { ok: boolean }> }>('GET', '/healthz');
    assert.equal(res.status, 200);
    assert.equal(res.body.status, 'ok');
    // The build registry is checked when there is one (the test cluster's, when it runs).
    assert.deepEqual(Object.keys(res.body.checks).sort(), ['docker', 'postgres', ...(process.env.GG_TEST_REGISTRY ? ['registry'] : []), 'temporal']);
  });
});

describe('health when the Kubernetes API server and the build registry cannot be reached', () => {
  it('reports each as down, with why, and answers 503', async () => {
    // Ports nothing listens on (not port 1: fetch refuses that one before trying).
    const [apiPort, registryPort] = [await freePort(), await freePort()];
    const kubeconfig = path.join(env('GG_TEST_SCRATCH'), `dead-kubeconfig-${process.pid}.yaml`);
    await writeFile(
      kubeconfig,
      `apiVersion: v1\nkind: Config\nclusters: [{name: gone, cluster: {server: "https://127.0.0.1:${apiPort}", insecure-skip-tls-verify: true}}]\n` +
        'users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: gone, user: u}}]\ncurrent-context: c\n',
    );
    const down = await startTestSystem({
      nodeWorker: false,
      clusterWorker: false,
      env: { GLIDERGUN_KUBERNETES: 'true', GLIDERGUN_KUBECONFIG: kubeconfig, GLIDERGUN_KUBERNETES_RUNNER_IMAGE: '127.0.0.1:5000/runner:1', GLIDERGUN_REGISTRY: `127.0.0.1:${registryPort}/templates` },
    });
    try {
      const health = await down.call<{ status: string; checks: Record<string, { ok: boolean; error?: string }> }>('GET', '/healthz');
      console.log(`health with both down: ${JSON.stringify(health.body)}`);
      assert.equal(health.status, 503);
      assert.equal(health.body.status, 'degraded');
      assert.equal(health.body.checks.kubernetes?.ok, false);
      assert.match(health.body.checks.kubernetes?.error ?? '', /ECONNREFUSED/, 'says why');
      assert.equal(health.body.checks.registry?.ok, false);
      assert.match(health.body.checks.registry?.error ?? '', /ECONNREFUSED/);
      assert.equal(health.body.checks.postgres?.ok, true);
    } finally {
      await down.stop();
    }
  });
});

/** What the API needs of nodes, for an app made here: a CA of its own and no gateway. */
async function testNodeDeps() {
  const { createCa } = await import('../../core/pki.js');
  return {
    ca: await createCa(),
    gatewaySecret: 'x'.repeat(43),
    gatewayAddress: '127.0.0.1:1',
    enrolmentSeconds: 3600,
    certificateDays: 30,
    runs: { timeoutSeconds: 3600, maxTimeoutSeconds: 86400, stopGraceSeconds: 10, nodeWaitSeconds: 600, logMaxBytes: 1024 * 1024 },
  };
}

describe('the API when a dependency is down', () => {
  it('answers 503 DEPENDENCY_UNAVAILABLE when Postgres cannot be reached, and health says which', async () => {
    const { createApp } = await import('../../api/app.js');
    const { SecretBox } = await import('../../core/crypto.js');
    const { createPool } = await import('../../core/db/pool.js');
    const pino = (await import('pino')).default;
    const db = createPool('postgres://postgres@127.0.0.1:1/none', 1);
    const app = createApp({
      db,
      temporal: {} as never,
      taskQueue: 'none',
      kubernetesEnabled: false,
      maxRunTimeoutSeconds: 3600,
      state: { versionsKept: 50, maxMb: 4096 },
      builds: { registry: undefined, timeoutSeconds: 60, uploadMaxBytes: 1024 * 1024, allowFileGitUrls: false },
      secrets: new SecretBox(Buffer.alloc(32)),
      probes: { postgres: async () => void (await db.query('SELECT 1')) },
      log: pino({ level: 'silent' }),
      version: 'test',
      nodes: await testNodeDeps(),
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as { port: number };
    try {
      const call = apiClient(`http://127.0.0.1:${port}`, `ggt_aaaaaaaaaaaa_${'b'.repeat(40)}`);
      const res = await call<ErrorBody>('GET', '/v1/templates');
      assert.equal(res.status, 503);
      assert.equal(res.body.code, 'DEPENDENCY_UNAVAILABLE');
      const health = await call<{ status: string; checks: { postgres: { ok: boolean; error: string } } }>('GET', '/healthz');
      assert.equal(health.status, 503);
      assert.equal(health.body.checks.postgres.ok, false);
    } finally {
      server.close();
      await db.end();
    }
  });
});

describe('the API when Temporal is down', () => {
  it('answers 503 for a new run and closes it as failed, so the deployment is not left with a run nothing executes', async () => {
    const { createApp } = await import('../../api/app.js');
    const { SecretBox } = await import('../../core/crypto.js');
    const { createPool } = await import('../../core/db/pool.js');
    const { createToken } = await import('../../core/db/tokens.js');
    const { addTemplateVersion, createTemplate } = await import('../../core/db/templates.js');
    const { Client, Connection } = await import('@temporalio/client');
    const { env } = await import('../support/system.js');
    const pino = (await import('pino')).default;
    const db = createPool(env('GG_TEST_DATABASE_URL'), 2);
    const connection = Connection.lazy({ address: '127.0.0.1:1', connectTimeout: 500 });
    const app = createApp({
      db,
      temporal: new Client({ connection }),
      taskQueue: 'none',
      kubernetesEnabled: false,
      maxRunTimeoutSeconds: 3600,
      state: { versionsKept: 50, maxMb: 4096 },
      builds: { registry: undefined, timeoutSeconds: 60, uploadMaxBytes: 1024 * 1024, allowFileGitUrls: false },
      secrets: new SecretBox(Buffer.alloc(32)),
      probes: {},
      log: pino({ level: 'silent' }),
      version: 'test',
      nodes: await testNodeDeps(),
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as { port: number };
    try {
      const name = uniqueName('down');
      await createTemplate(db, { name, description: '', createdBy: 'test' });
      await addTemplateVersion(db, { templateName: name, image: 'x:1', parameters: [], actions: ['deploy'], tfVars: false, limits: {}, createdBy: 'test' });
      const { secret } = await createToken(db, { name: uniqueName('op'), role: 'operator', createdBy: 'test' });
      const call = apiClient(`http://127.0.0.1:${port}`, secret);
      const dep = await call<{ id: string }>('POST', '/v1/deployments', { template: { name }, target: { kind: 'node', node: 'local' } });
      assert.equal(dep.status, 201);
      const refused = await call<ErrorBody>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
      assert.equal(refused.status, 503);
      assert.equal(refused.body.code, 'DEPENDENCY_UNAVAILABLE');
      const runId = refused.body.details?.runId as string;
      const run = await call<{ status: string; reason: string }>('GET', `/v1/runs/${runId}`);
      assert.equal(run.body.status, 'failed');
      assert.equal(run.body.reason, 'infrastructure');
      const again = await call<ErrorBody>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
      assert.equal(again.status, 503, 'not 409: the failed hand-over left no active run behind');
    } finally {
      server.close();
      await connection.close().catch(() => undefined);
      await db.end();
    }
  });
});
