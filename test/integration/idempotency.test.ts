import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createDeployment, registerExampleTemplate, uniqueName } from '../support/fixtures.js';
import { apiClient, eventually, startTestSystem, type TestSystem } from '../support/system.js';

describe('Idempotency-Key on POSTs that create things', () => {
  let sys: TestSystem;
  let template: string;
  before(async () => {
    sys = await startTestSystem();
    template = await registerExampleTemplate(sys.call);
  });
  after(async () => {
    await sys.stop();
  });

  const deploymentsOf = async (name: string) =>
    Number((await sys.db.query<{ n: string }>('SELECT count(*) n FROM deployments WHERE name = $1', [name])).rows[0]!.n);

  it('answers a retry with the first response and creates one deployment', async () => {
    const name = uniqueName('idem');
    const body = { name, template: { name: template }, parameters: { message: 'once' }, target: { kind: 'node', node: sys.nodeId } };
    const key = uniqueName('key');
    const first = await sys.call<{ id: string }>('POST', '/v1/deployments', body, { 'idempotency-key': key });
    // The same request with its keys in another order is the same request.
    const reordered = { target: body.target, parameters: body.parameters, template: body.template, name };
    const second = await sys.call<{ id: string }>('POST', '/v1/deployments', reordered, { 'idempotency-key': key });
    assert.equal(first.status, 201);
    assert.equal(second.status, 201);
    assert.equal(second.body.id, first.body.id);
    assert.equal(second.headers.get('idempotent-replayed'), 'true');
    assert.equal(second.headers.get('location'), `/v1/deployments/${first.body.id}`);
    assert.equal(await deploymentsOf(name), 1);
  });

  it('refuses the same key with another body, writing nothing', async () => {
    const name = uniqueName('idem');
    const key = uniqueName('key');
    const target = { kind: 'node', node: sys.nodeId };
    await sys.call('POST', '/v1/deployments', { name, template: { name: template }, parameters: { message: 'a' }, target }, { 'idempotency-key': key });
    const other = await sys.call<{ code: string }>('POST', '/v1/deployments', { name, template: { name: template }, parameters: { message: 'b' }, target }, { 'idempotency-key': key });
    assert.equal(other.status, 422);
    assert.equal(other.body.code, 'IDEMPOTENCY_KEY_REUSED');
    const elsewhere = await sys.call<{ code: string }>('POST', '/v1/templates', { name: uniqueName('t') }, { 'idempotency-key': key });
    assert.equal(elsewhere.status, 422, 'a key is bound to its route too');
    assert.equal(await deploymentsOf(name), 1);
  });

  it('keeps keys apart per caller', async () => {
    const key = uniqueName('shared');
    const a = await apiClient(sys.api.url, sys.tokens.author)<{ name: string }>('POST', '/v1/templates', { name: uniqueName('pa') }, { 'idempotency-key': key });
    const b = await apiClient(sys.api.url, sys.tokens.admin)<{ name: string }>('POST', '/v1/templates', { name: uniqueName('pb') }, { 'idempotency-key': key });
    assert.equal(a.status, 201);
    assert.equal(b.status, 201);
    assert.notEqual(a.body.name, b.body.name);
  });

  it('starts one run for a retried run request instead of refusing it as a conflict', async () => {
    const id = await createDeployment(sys.call, template, { message: 'run once' }, { kind: 'node', node: sys.nodeId });
    const key = uniqueName('run');
    const first = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' }, { 'idempotency-key': key });
    const retry = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' }, { 'idempotency-key': key });
    assert.equal(first.status, 202);
    assert.equal(retry.status, 202);
    assert.equal(retry.body.id, first.body.id);
    const runs = await sys.call<{ items: unknown[] }>('GET', `/v1/deployments/${id}/runs`);
    assert.equal(runs.body.items.length, 1);
    await eventually('the run to end', async () => {
      const r = await sys.call<{ status: string }>('GET', `/v1/runs/${first.body.id}`);
      return r.body.status === 'succeeded' ? r : undefined;
    });
  });

  it('lets a refused request be retried with the same key once its cause is gone', async () => {
    const name = uniqueName('later');
    const key = uniqueName('key');
    const refused = await sys.call('POST', `/v1/templates/${name}/versions`, { image: 'x:1' }, { 'idempotency-key': key });
    assert.equal(refused.status, 404);
    await sys.call('POST', '/v1/templates', { name });
    const ok = await sys.call('POST', `/v1/templates/${name}/versions`, { image: 'x:1' }, { 'idempotency-key': key });
    assert.equal(ok.status, 201);
  });

  it('creates exactly one deployment when the same request races with itself', async () => {
    const name = uniqueName('race');
    const key = uniqueName('key');
    const body = { name, template: { name: template }, parameters: { message: 'race' }, target: { kind: 'node', node: sys.nodeId } };
    const results = await Promise.all(Array.from({ length: 10 }, () => sys.call<{ id?: string; code?: string }>('POST', '/v1/deployments', body, { 'idempotency-key': key })));
    const ids = new Set(results.filter((r) => r.status === 201).map((r) => r.body.id));
    assert.equal(ids.size, 1);
    for (const r of results) assert.ok(r.status === 201 || (r.status === 409 && r.body.code === 'IDEMPOTENCY_KEY_IN_USE'), JSON.stringify(r.body));
    assert.equal(await deploymentsOf(name), 1);
  });

  it('refuses keys that are empty or too long', async () => {
    const res = await sys.call<{ code: string }>('POST', '/v1/templates', { name: uniqueName('k') }, { 'idempotency-key': 'x'.repeat(201) });
    assert.equal(res.status, 400);
    assert.equal(res.body.code, 'VALIDATION_FAILED');
  });
});
