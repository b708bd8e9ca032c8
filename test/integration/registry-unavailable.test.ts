/**
 * A registry that does not answer ends a cluster run as `image-unavailable` within the bound the operator's
 * guide promises (REGISTRY_PATIENCE_MS plus one request), naming the registry: once, not after ten activity
 * attempts. Against real sockets: a port nobody listens on, one that accepts and stays silent, one that
 * answers 503, and Debian's docker-registry that answers.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ImageNotFoundError, RegistryClient, RegistryUnavailableError } from '../../activities/execution/image-config.js';
import { REGISTRY_PATIENCE_MS } from '../../activities/registry-auth.js';
import { pushImageTo, startImageRegistry, type ImageRegistry } from '../../infra/dev/registry.js';
import { freePort } from '../../infra/dev/ports.js';
import { EXAMPLE_PARAMETERS, uniqueName, waitForRun } from '../support/fixtures.js';
import { runGoneFromCluster } from '../support/kubernetes.js';
import { tempDirs } from '../support/temp-dirs.js';
import { images, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

/** What the guide promises: the patience, one request's last chance, and room for a loaded machine. */
const BOUND_MS = REGISTRY_PATIENCE_MS + 4_000;

async function listen(server: net.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; result: T | undefined; error: unknown }> {
  const started = Date.now();
  try {
    return { ms: Date.now() - started, result: await fn(), error: undefined };
  } catch (error) {
    return { ms: Date.now() - started, result: undefined, error };
  }
}

describe('reading an image configuration from a registry that does not answer', () => {
  const dirs = tempDirs('gg-registry-unavailable-');
  const client = new RegistryClient();
  let registry: ImageRegistry;
  let silent: net.Server;
  const silentSockets = new Set<net.Socket>();
  let failing: http.Server;
  let pushed: string;

  before(async () => {
    registry = await startImageRegistry({ dir: await dirs.fresh(), say: () => undefined });
    pushed = await pushImageTo(registry.address, images.busybox);
    silent = net.createServer((socket) => silentSockets.add(socket));
    failing = http.createServer((_req, res) => res.writeHead(503, 'Service Unavailable').end());
  });
  after(async () => {
    for (const s of silentSockets) s.destroy();
    await new Promise((r) => silent.close(r));
    failing.closeAllConnections();
    await new Promise((r) => failing.close(r));
    await registry.stop();
  });

  it('reads the configuration from a registry that answers', async () => {
    const config = await client.imageConfig(pushed);
    assert.match(config.digest, /^sha256:[0-9a-f]{64}$/);
    await assert.rejects(client.imageConfig(`${registry.address}/glider-gun/not-there:1`), ImageNotFoundError);
  });

  // The three at once: each waits out the patience.
  it('gives up within the bound, naming the registry, on a port nobody listens on, a silent server, and one answering 503', async () => {
    const kinds = {
      'a port nobody listens on': `127.0.0.1:${await freePort()}`,
      'a server that accepts and never answers': await listen(silent),
      'a server that answers 503': await listen(failing),
    };
    await Promise.all(
      Object.entries(kinds).map(async ([kind, host]) => {
        const { ms, error } = await timed(() => client.imageConfig(`${host}/glider-gun/example:1`));
        assert.ok(error instanceof RegistryUnavailableError, `${kind}: expected RegistryUnavailableError, got ${String(error)}`);
        assert.match(error.message, new RegExp(`registry ${host.replace(/\./g, '\\.')} does not answer`), kind);
        assert.ok(ms < BOUND_MS, `${kind}: gave up after ${ms} ms (bound ${BOUND_MS} ms)`);
        // It did try more than once: a registry restarting for a second is not a failed run.
        assert.match(error.message, /\b([2-9]|\d\d) tries\b/, kind);
      }),
    );
  });
});

describe('a cluster run whose image is on a registry that does not answer', { skip: noCluster }, () => {
  let sys: TestSystem;

  before(async () => {
    sys = await startTestSystem({ nodeWorker: false, env: await kubernetesEnv() });
  });
  after(async () => {
    await sys.stop();
  });

  it('fails once, as image-unavailable, within the bound, saying which registry', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const name = uniqueName('dead-registry');
    assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
    const version = await sys.call('POST', `/v1/templates/${name}/versions`, {
      image: `${dead}/glider-gun/${path.basename(name)}:1`,
      tfVars: true,
      parameters: EXAMPLE_PARAMETERS,
    });
    assert.equal(version.status, 201, JSON.stringify(version.body));
    const d = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, parameters: { message: 'x' }, target: { kind: 'cluster' } });
    assert.equal(d.status, 201, JSON.stringify(d.body));
    const started = Date.now();
    const r = await sys.call<{ id: string }>('POST', `/v1/deployments/${d.body.id}/runs`, { action: 'deploy' });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const run = await waitForRun(sys.call, r.body.id, 60_000);
    const ms = Date.now() - started;
    assert.equal(run.status, 'failed');
    assert.equal(run.reason, 'image-unavailable');
    assert.match(run.message ?? '', new RegExp(`registry ${dead.replace(/\./g, '\\.')} does not answer`));
    // The workflow's own steps (preparing, recording the outcome) take a moment besides the registry's patience.
    assert.ok(ms < BOUND_MS + 6_000, `the run took ${ms} ms to fail`);
    await runGoneFromCluster(r.body.id);
  });
});
