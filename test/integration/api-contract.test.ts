import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { compileErrors, validate } from '@readme/openapi-parser';
import type { Express } from 'express';
import { startTestSystem, type TestSystem } from '../support/system.js';

interface Layer {
  route?: { path: string; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
}

/** Every METHOD path the Express app answers, walking nested routers. */
function routesOf(app: Express): Set<string> {
  const found = new Set<string>();
  const walk = (stack: Layer[]) => {
    for (const layer of stack) {
      if (layer.route) for (const m of Object.keys(layer.route.methods)) found.add(`${m.toUpperCase()} ${layer.route.path}`);
      else if (layer.handle?.stack) walk(layer.handle.stack);
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack);
  return found;
}

type OpenApi = { openapi: string; paths: Record<string, Record<string, { security?: unknown[]; operationId: string }>> };

describe('the API describes itself', () => {
  let sys: TestSystem;
  let document: OpenApi;
  before(async () => {
    sys = await startTestSystem({ nodeWorker: false });
    const res = await fetch(`${sys.api.url}/openapi.json`);
    assert.equal(res.status, 200);
    document = (await res.json()) as OpenApi;
  });
  after(async () => {
    await sys.stop();
  });

  it('serves a valid OpenAPI 3.1 document without authentication', async () => {
    assert.equal(document.openapi, '3.1.0');
    const result = await validate(structuredClone(document) as never);
    assert.ok(result.valid, result.valid ? '' : compileErrors(result));
  });

  it('lists exactly the routes the router answers', () => {
    const documented = new Set(
      Object.entries(document.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ':$1')}`)),
    );
    const routed = routesOf(sys.api.app);
    assert.ok(routed.size >= 15, `found only ${routed.size} routes: the walk is broken`);
    assert.deepEqual([...routed].sort(), [...documented].sort());
  });

  it('marks every route but health and the spec itself as needing a bearer token', () => {
    const open = Object.entries(document.paths)
      .flatMap(([p, ops]) => Object.entries(ops).map(([m, op]) => [`${m.toUpperCase()} ${p}`, op] as const))
      .filter(([, op]) => !op.security)
      .map(([name]) => name)
      .sort();
    assert.deepEqual(open, ['GET /docs', 'GET /healthz', 'GET /openapi.json']);
  });

  it('serves a browsable page of the document', async () => {
    const page = await fetch(`${sys.api.url}/docs`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await page.text(), /SwaggerUIBundle\(\{ url: '\/openapi.json'/);
    const bundle = await fetch(`${sys.api.url}/docs/assets/swagger-ui-bundle.js`);
    assert.equal(bundle.status, 200);
    assert.ok((await bundle.arrayBuffer()).byteLength > 100_000);
  });
});
