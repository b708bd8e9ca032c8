/**
 * The node API client (workers/node-api.ts) against a local HTTPS server standing in for the gateway: the
 * API's `{code, message}` made into errors, retries only where a call is idempotent and the failure passes,
 * the pinned CA, one kept-alive connection, and credentials replaced after a renewal.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { after, before, beforeEach, describe, it } from 'node:test';
import { createCa, createKeyAndCsr, issueServerCertificate, signNodeCertificate, type CertificateAuthority } from '../../core/pki.js';
import { NodeApi, NodeApiError } from '../../workers/node-api.js';

const FAST = { attempts: 4, initialMs: 5, maxMs: 20 };

describe('the node API client', () => {
  let ca: CertificateAuthority;
  let client: { certPem: string; keyPem: string };
  let server: https.Server;
  let address: string;
  let handler: (req: IncomingMessage, res: ServerResponse, body: string) => void;
  let requests: { method: string; url: string; body: string; serial: string | undefined }[];
  let connections: number;

  const nodeCertificate = async (nodeId: string) => {
    const { keyPem, csrPem } = await createKeyAndCsr();
    return { keyPem, certPem: await signNodeCertificate(ca, csrPem, nodeId) };
  };
  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) =>
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
  const api = (opts: { retry?: typeof FAST } = {}) => new NodeApi(address, { ca: ca.certPem, cert: client.certPem, key: client.keyPem }, { retry: opts.retry ?? FAST });

  before(async () => {
    ca = await createCa();
    client = await nodeCertificate('edge-1');
    const tls = await issueServerCertificate(ca, { ipAddresses: ['127.0.0.1'] });
    server = https.createServer({ key: tls.keyPem, cert: tls.certPem, ca: [ca.certPem], requestCert: true, rejectUnauthorized: false }, (req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d));
      req.on('end', () => {
        const socket = req.socket as TLSSocket;
        requests.push({ method: req.method ?? '', url: req.url ?? '', body, serial: socket.authorized ? socket.getPeerX509Certificate()?.serialNumber : undefined });
        handler(req, res, body);
      });
    });
    server.on('secureConnection', () => (connections += 1));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  beforeEach(() => {
    requests = [];
    connections = 0;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('calls each route with its method and body, with the client certificate, over one kept-alive connection', async () => {
    handler = (req, res) => {
      if (req.url === '/v1/node/active-runs') json(res, 200, { active: ['run-aaaaaaaaaaaa'] });
      else json(res, 200, req.method === 'GET' ? { spec: {} } : {});
    };
    const c = api();
    try {
      await c.heartbeat({ version: '1.2.3', capacity: 4, activeRuns: ['run-aaaaaaaaaaaa'] });
      assert.deepEqual(await c.runGrant('run-aaaaaaaaaaaa'), { spec: {} });
      await c.grantAgent('run-aaaaaaaaaaaa', 'c2hhMjU2');
      assert.deepEqual(await c.runReport('run-aaaaaaaaaaaa'), { spec: {} });
      assert.deepEqual([...(await c.activeRuns(['run-aaaaaaaaaaaa', 'run-bbbbbbbbbbbb']))], ['run-aaaaaaaaaaaa']);
    } finally {
      c.close();
    }
    assert.deepEqual(
      requests.map((r) => `${r.method} ${r.url} ${r.body}`),
      [
        'POST /v1/node/heartbeat {"version":"1.2.3","capacity":4,"activeRuns":["run-aaaaaaaaaaaa"]}',
        'GET /v1/node/runs/run-aaaaaaaaaaaa ',
        'PUT /v1/node/runs/run-aaaaaaaaaaaa/agent {"credentialSha256":"c2hhMjU2"}',
        'GET /v1/node/runs/run-aaaaaaaaaaaa/report ',
        'POST /v1/node/active-runs {"runIds":["run-aaaaaaaaaaaa","run-bbbbbbbbbbbb"]}',
      ],
    );
    const serial = new X509Certificate(client.certPem).serialNumber;
    assert.ok(requests.every((r) => r.serial === serial), 'every call carried the node\'s certificate');
    assert.equal(connections, 1, 'one TLS connection, kept alive');
  });

  it('makes the API\'s {code, message} into an error, and does not retry what a retry cannot mend (4xx)', async () => {
    handler = (_req, res) => json(res, 404, { code: 'RUN_NOT_OF_NODE', message: 'run-aaaaaaaaaaaa is not one of this node\'s active runs' });
    const c = api();
    try {
      await assert.rejects(c.runGrant('run-aaaaaaaaaaaa'), (err: unknown) => {
        assert.ok(err instanceof NodeApiError);
        assert.equal(err.status, 404);
        assert.equal(err.code, 'RUN_NOT_OF_NODE');
        assert.equal(err.retryable, false);
        assert.match(err.message, /GET \/v1\/node\/runs\/run-aaaaaaaaaaaa: 404 RUN_NOT_OF_NODE: run-aaaaaaaaaaaa is not one of this node's active runs/);
        return true;
      });
    } finally {
      c.close();
    }
    assert.equal(requests.length, 1, 'asked once');
  });

  it('retries an idempotent call through 5xx and 429 (Retry-After heeded), but never a non-idempotent one', async () => {
    let n = 0;
    handler = (_req, res) => {
      n += 1;
      if (n === 1) json(res, 503, { code: 'API_UNREACHABLE', message: 'the API did not answer' });
      else if (n === 2) json(res, 429, { code: 'RATE_LIMITED', message: 'slow down' }, { 'retry-after': '0' });
      else json(res, 200, { active: [] });
    };
    const c = api();
    try {
      assert.equal((await c.activeRuns(['run-aaaaaaaaaaaa'])).size, 0);
      assert.equal(requests.length, 3, 'two failures, then the answer');
      requests = [];
      n = 0;
      await assert.rejects(c.renewCertificate('csr'), (err: unknown) => err instanceof NodeApiError && err.status === 503 && err.retryable);
      assert.equal(requests.length, 1, 'a certificate request is not repeated by the client (the renewal loop tries again later)');
      requests = [];
      handler = (_req, res) => json(res, 502, { code: 'API_UNREACHABLE', message: 'still down' });
      await assert.rejects(c.activeRuns([]), /502 API_UNREACHABLE: still down/);
      assert.equal(requests.length, FAST.attempts, 'gives up after its attempts, with the last error');
      requests = [];
      await assert.rejects(c.heartbeat({ version: 'x', capacity: 1, activeRuns: [] }), /502 API_UNREACHABLE: still down/);
      assert.equal(requests.length, 1, 'a heartbeat is not repeated by the client: the next heartbeat is the retry, and a failure is told at once');
    } finally {
      c.close();
    }
  });

  it('says a plain-text or malformed answer plainly', async () => {
    handler = (_req, res) => res.writeHead(500, { 'content-type': 'text/plain' }).end('upstream exploded');
    const c = api({ retry: { attempts: 1, initialMs: 1, maxMs: 1 } });
    try {
      await assert.rejects(c.heartbeat({ version: 'x', capacity: 1, activeRuns: [] }), /500 HTTP_500: upstream exploded/);
      handler = (_req, res) => json(res, 200, { active: 'not a list' });
      await assert.rejects(c.activeRuns([]), (err: unknown) => err instanceof NodeApiError && err.code === 'BAD_ANSWER' && /active/.test(err.message));
    } finally {
      c.close();
    }
  });

  it('retries when the gateway cannot be reached, then says so', async () => {
    // A port that accepts and drops every connection, then one that refuses.
    const dropper = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => dropper.listen(0, '127.0.0.1', resolve));
    let dropped = 0;
    dropper.on('connection', () => (dropped += 1));
    const port = (dropper.address() as AddressInfo).port;
    const c = new NodeApi(`127.0.0.1:${port}`, { ca: ca.certPem, cert: client.certPem, key: client.keyPem }, { retry: FAST });
    try {
      await assert.rejects(c.runReport('run-aaaaaaaaaaaa'), (err: unknown) => {
        assert.ok(err instanceof NodeApiError, String(err));
        assert.equal(err.code, 'UNREACHABLE');
        assert.equal(err.retryable, true);
        assert.match(err.message, new RegExp(`the gateway at 127.0.0.1:${port} cannot be reached`));
        return true;
      });
      assert.equal(dropped, FAST.attempts, 'each attempt tried again');
    } finally {
      c.close();
      await new Promise<void>((resolve) => dropper.close(() => resolve()));
    }
    const refused = new NodeApi(`127.0.0.1:${port}`, { ca: ca.certPem }, { retry: FAST });
    await assert.rejects(refused.runReport('run-aaaaaaaaaaaa'), /cannot be reached \(ECONNREFUSED\)/);
    refused.close();
  });

  it('trusts only the pinned CA: a gateway certificate of another CA is refused at once, not retried', async () => {
    handler = (_req, res) => json(res, 200, {});
    const other = await createCa({ commonName: 'another CA' });
    const c = new NodeApi(address, { ca: other.certPem, cert: client.certPem, key: client.keyPem }, { retry: FAST });
    try {
      await assert.rejects(c.heartbeat({ version: 'x', capacity: 1, activeRuns: [] }), (err: unknown) => {
        assert.ok(err instanceof NodeApiError);
        assert.equal(err.code, 'TLS');
        assert.equal(err.retryable, false);
        assert.match(err.message, /certificate the pinned CA does not vouch for/);
        return true;
      });
    } finally {
      c.close();
    }
    assert.equal(requests.length, 0);
  });

  it('uses replaced credentials from the next call on (a renewal)', async () => {
    handler = (_req, res) => json(res, 200, {});
    const c = api();
    const renewed = await nodeCertificate('edge-1');
    try {
      await c.heartbeat({ version: 'x', capacity: 1, activeRuns: [] });
      c.setCredentials({ ca: ca.certPem, cert: renewed.certPem, key: renewed.keyPem });
      await c.heartbeat({ version: 'x', capacity: 1, activeRuns: [] });
    } finally {
      c.close();
    }
    assert.deepEqual(
      requests.map((r) => r.serial),
      [new X509Certificate(client.certPem).serialNumber, new X509Certificate(renewed.certPem).serialNumber],
    );
  });
});
