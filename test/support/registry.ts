import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pushImageTo } from '../../infra/dev/kubernetes.js';

/**
 * Pushes a local image to the test registry (test/run.ts starts it) and answers its registry reference:
 * the form both adapters run, a Docker node pulling it and a Kubernetes node likewise.
 */
export async function pushToRegistry(localRef: string): Promise<string> {
  // Without the test cluster (GG_TEST_KUBERNETES=0) there is no registry: a Docker node runs the local image.
  const registry = process.env.GG_TEST_REGISTRY;
  return registry ? pushImageTo(registry, localRef) : localRef;
}

/**
 * A registry that wants credentials: Basic auth in front of a registry without any (Debian's
 * docker-registry has htpasswd, but this needs no file and can run several with other passwords).
 */
export async function startGuardedRegistry(backend: string, auth: { username: string; password: string }): Promise<{ address: string; stop(): Promise<void> }> {
  const [host, port] = backend.split(':') as [string, string];
  const expected = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
  const server = http.createServer((req, res) => {
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="gg-test"', 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
      return;
    }
    // Host goes through as it came: the registry's upload locations then point back here.
    const upstream = http.request({ host, port: Number(port), path: req.url, method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', (err) => res.destroy(err));
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
