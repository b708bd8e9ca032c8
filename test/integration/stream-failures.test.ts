/**
 * Issue 10, item 4: no stream error kills a process. Real failures injected half-way through each streamed
 * path (archive, restore, logs, uploads and downloads), against the real services: the one run or request
 * fails cleanly (or recovers by itself), nothing is thrown out of the process (API and workers run in this
 * one, as under `npm start`), and the next run or request succeeds.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { Readable } from 'node:stream';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Connection } from '@temporalio/client';
import pg from 'pg';
import pino from 'pino';
import { containerName } from '../../activities/execution/adapter.js';
import { SecretBox } from '../../core/crypto.js';
import { createPool } from '../../core/db/pool.js';
import { grantRunAgent } from '../../core/db/run-agents.js';
import { writeStateVersion } from '../../core/db/state.js';
import { loadEncryptionKey } from '../../core/keys.js';
import { startApiServer } from '../../workers/api.js';
import { tgzOf } from '../support/archives.js';
import { uniqueName, waitForRun } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { env, eventually, startTestSystem, type TestSystem } from '../support/system.js';

/** Polls faster than `eventually`: some windows (a run's archiving) last a second or two. */
async function soon<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The regular files of a tar (name → content), read without any code of ours. */
function tarFiles(tarball: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  let at = 0;
  while (at + 512 <= tarball.length && tarball[at] !== 0) {
    const field = (o: number, n: number) => tarball.subarray(at + o, at + o + n).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    if (['0', ''].includes(field(156, 1))) files.set(field(0, 100), tarball.subarray(at + 512, at + 512 + size));
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

/**
 * A request whose client goes away half-way: it sends `sendBytes` of a body announced as `body.length`
 * bytes, or reads `readBytes` of the answer, then destroys its socket. Resolves with what it read.
 */
function cutShort(
  url: string,
  opts: { method: string; headers: Record<string, string>; body?: Buffer; sendBytes?: number; readBytes?: number },
): Promise<{ status?: number; read: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method, headers: { ...opts.headers, ...(opts.body ? { 'content-length': String(opts.body.length) } : {}) } });
    let read = 0;
    let status: number | undefined;
    req.on('error', () => resolve({ status, read })); // our own socket, destroyed on purpose
    req.on('response', (res) => {
      status = res.statusCode;
      res.on('data', (d: Buffer) => {
        read += d.length;
        if (opts.readBytes !== undefined && read >= opts.readBytes) {
          req.destroy();
          resolve({ status, read });
        }
      });
      res.on('end', () => resolve({ status, read }));
      res.on('error', () => resolve({ status, read }));
    });
    if (opts.body && opts.sendBytes !== undefined) {
      req.write(opts.body.subarray(0, opts.sendBytes), (err) => {
        if (err) return reject(err);
        // Long enough for the server to have started on the body.
        setTimeout(() => {
          req.destroy();
          resolve({ status, read });
        }, 300);
      });
    } else {
      req.end(opts.body);
    }
  });
}

describe('stream failures', () => {
  let sys: TestSystem;
  let crashes: unknown[] = [];
  const onCrash = (err: unknown) => crashes.push(err);

  before(async () => {
    sys = await startTestSystem();
  });
  after(async () => {
    await sys.stop();
  });
  beforeEach(() => {
    crashes = [];
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
  });
  afterEach(() => {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    assert.deepEqual(crashes, [], 'nothing was thrown out of the process');
  });

  const auth = (token = sys.tokens.admin) => ({ authorization: `Bearer ${token}` });

  async function scriptTemplate(script: string): Promise<string> {
    const image = await scriptImage(sys.docker, script);
    const name = uniqueName('streams');
    assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
    assert.equal((await sys.call('POST', `/v1/templates/${name}/versions`, { image })).status, 201);
    return name;
  }

  async function deployment(template: string, node = sys.nodeId): Promise<string> {
    const dep = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name: template }, parameters: {}, target: { kind: 'node', node } });
    assert.equal(dep.status, 201, JSON.stringify(dep.body));
    return dep.body.id;
  }

  async function startRun(deploymentId: string): Promise<string> {
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
    assert.equal(run.status, 202, JSON.stringify(run.body));
    return run.body.id;
  }

  async function logOf(runId: string, stream = 'stdout'): Promise<string> {
    const res = await fetch(`${sys.api.url}/v1/runs/${runId}/logs?stream=${stream}`, { headers: auth() });
    assert.equal(res.status, 200);
    return res.text();
  }

  /** Everything else goes on: a fresh run succeeds, and the API answers. */
  async function stillWorking(): Promise<void> {
    const template = await scriptTemplate('#!/bin/sh\necho still working > /state/ok\necho still working\n');
    const run = await waitForRun(sys.call, await startRun(await deployment(template)), 60_000);
    assert.equal(run.status, 'succeeded', JSON.stringify(run));
    assert.equal(await logOf(run.id), 'still working\n');
    assert.equal((await fetch(`${sys.api.url}/healthz`)).status, 200);
  }

  /** A second API on the same database whose error log is kept (the test system's is silent). */
  async function withLoggedApi(fn: (url: string, logged: string[]) => Promise<void>, db = sys.db): Promise<void> {
    const logged: string[] = [];
    const log = pino({ level: 'error' }, { write: (line: string) => logged.push(line) });
    const api = await startApiServer({ config: sys.config, db, connection: sys.client.connection as Connection, log });
    try {
      await fn(api.url, logged);
    } finally {
      await api.close();
    }
  }

  /** A session of its own that can take locks and end other sessions. */
  async function session(): Promise<pg.Client & { pid: number }> {
    const client = new pg.Client({ connectionString: env('GG_TEST_DATABASE_URL') });
    await client.connect();
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    return Object.assign(client, { pid: rows[0]!.pid });
  }

  /** The backend that waits on `locker`'s lock in a statement starting with `statement`; ended by Postgres' own hand. */
  async function terminateBlocked(locker: { pid: number }, statement: string, extra = ''): Promise<number> {
    const pid = await soon(`a '${statement}…' to wait on our lock`, async () => {
      const { rows } = await sys.db.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) AND query LIKE $2 ${extra}`,
        [locker.pid, `${statement}%`],
      );
      return rows[0]?.pid;
    });
    const { rows } = await sys.db.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [pid]);
    assert.equal(rows[0]!.ok, true);
    return pid;
  }

  describe('archive', () => {
    const BIG = 48 * 1024 * 1024;
    let deploymentId: string;
    let runId: string;
    let bigSha: string;

    it('survives the store failing half-way through a large /state: the runner sends it again and it is stored whole', async () => {
      const template = await scriptTemplate(`#!/bin/sh\nhead -c ${BIG} /dev/urandom > /state/big\nsha256sum /state/big | cut -d' ' -f1\n`);
      deploymentId = await deployment(template);
      runId = await startRun(deploymentId);
      // Archiving has begun once the version being written exists; then the next chunk insert is made to
      // wait on a lock, and its connection is ended by Postgres, as an admin or a failover would.
      const version = await soon('archiving to begin', async () => {
        const { rows } = await sys.db.query<{ version: number }>(`SELECT version FROM state_versions WHERE deployment_id = $1 AND status = 'writing'`, [deploymentId]);
        return rows[0]?.version;
      });
      const locker = await session();
      try {
        await locker.query('BEGIN');
        await locker.query('SELECT 1 FROM state_versions WHERE deployment_id = $1 AND version = $2 FOR UPDATE', [deploymentId, version]);
        await terminateBlocked(locker, 'INSERT INTO state_chunks');
        const { rows } = await sys.db.query<{ n: number }>('SELECT count(*)::int AS n FROM state_chunks WHERE deployment_id = $1', [deploymentId]);
        assert.ok(rows[0]!.n < BIG / (1024 * 1024), `the store failed half-way (${rows[0]!.n} chunks stored)`);
      } finally {
        await locker.query('ROLLBACK').catch(() => undefined);
        await locker.end();
      }
      const run = await waitForRun(sys.call, runId, 120_000);
      assert.equal(run.status, 'succeeded', JSON.stringify(run));
      assert.equal(run.stateVersion, version);
      bigSha = (await logOf(runId)).trim();
      assert.match(bigSha, /^[0-9a-f]{64}$/);
      await stillWorking();
    });

    it('serves the archive again after a client went away half-way through downloading it', async () => {
      assert.ok(runId, 'needs the run of the test before');
      const url = `${sys.api.url}/v1/deployments/${deploymentId}/state-versions/1/archive`;
      for (let i = 0; i < 3; i++) {
        const cut = await cutShort(url, { method: 'GET', headers: auth(), readBytes: 256 * 1024 });
        assert.equal(cut.status, 200);
      }
      const res = await fetch(url, { headers: auth() });
      assert.equal(res.status, 200);
      const archive = Buffer.from(await res.arrayBuffer());
      assert.equal(sha256(archive), res.headers.get('x-checksum-sha256'));
      assert.equal(sha256(tarFiles(gunzipSync(archive)).get('big')!), bigSha, 'the state the template left, whole');
    });
  });

  it('fails a run cleanly whose restore breaks off half-way (a version that is a cut archive)', async () => {
    // The first run leaves 4 MiB of state; later runs find it restored and take a few seconds.
    const template = await scriptTemplate(
      '#!/bin/sh\nif [ -f /state/f1 ]; then sleep 4; else for i in 1 2 3 4; do head -c 1048576 /dev/urandom > /state/f$i; done; fi\necho done\n',
    );
    const deploymentId = await deployment(template);
    const first = await waitForRun(sys.call, await startRun(deploymentId), 60_000);
    assert.equal(first.status, 'succeeded', JSON.stringify(first));
    const whole = Buffer.from(await (await fetch(`${sys.api.url}/v1/deployments/${deploymentId}/state-versions/1/archive`, { headers: auth() })).arrayBuffer());
    // A version whose bytes are stored intact but are an archive cut half-way: it passes every check of the
    // store, and the restore itself finds it broken, after it has written the first files. Stored as the
    // second run's while that run is active; that run's own archive then finds its version done.
    const second = await startRun(deploymentId);
    await eventually('the second run to be running', async () => ((await sys.call<{ status: string }>('GET', `/v1/runs/${second}`)).body.status === 'running' ? true : undefined));
    const box = new SecretBox(await loadEncryptionKey({ base64: sys.config.security.encryptionKey, file: sys.config.security.encryptionKeyFile }));
    const cut = await writeStateVersion(sys.db, box, { deploymentId, runId: second }, Readable.from([whole.subarray(0, Math.floor(whole.length * 0.6))]));
    assert.equal((await waitForRun(sys.call, second, 60_000)).stateVersion, cut.version);

    // The archive itself is damaged: no retry can mend it, so the run fails at once as state-corrupt, naming it.
    const run = await waitForRun(sys.call, await startRun(deploymentId), 60_000);
    assert.equal(run.status, 'failed', JSON.stringify(run));
    assert.equal(run.reason, 'state-corrupt', JSON.stringify(run));
    assert.match(run.message ?? '', new RegExp(`state version ${cut.version} of ${deploymentId} cannot be unpacked \\(.*unexpected (end of file|EOF)`, 'i'));
    await stillWorking();
  });

  describe('logs', () => {
    const CHATTY = '#!/bin/sh\ni=1\nwhile [ $i -le 40 ]; do echo "line $i"; i=$((i+1)); sleep 0.1; done\n';
    const expected = Array.from({ length: 40 }, (_, i) => `line ${i + 1}\n`).join('');

    const chunksStored = (runId: string) =>
      soon('some of the log to be stored', async () => {
        const { rows } = await sys.db.query<{ n: number }>('SELECT count(*)::int AS n FROM run_log_chunks WHERE run_id = $1', [runId]);
        return rows[0]!.n > 0 ? true : undefined;
      });

    it('ends a run cleanly when its container is removed while its log is followed', async () => {
      const template = await scriptTemplate('#!/bin/sh\ni=1\nwhile true; do echo "line $i"; i=$((i+1)); sleep 0.05; done\n');
      const runId = await startRun(await deployment(template));
      await chunksStored(runId);
      await sys.docker.getContainer(containerName(runId)).remove({ force: true });
      const run = await waitForRun(sys.call, runId, 120_000);
      assert.equal(run.status, 'failed', JSON.stringify(run));
      assert.ok(run.reason, 'with a reason');
      assert.match(await logOf(runId), /^line 1\n/, 'what was logged before is kept');
      await stillWorking();
    });

    it('loses no byte when Postgres refuses a log insert half-way: the retried attempt stores the rest', async () => {
      const template = await scriptTemplate(CHATTY);
      const runId = await startRun(await deployment(template));
      await chunksStored(runId);
      const locker = await session();
      try {
        // A lock on the run's row makes the next chunk insert (its foreign key) wait; then its connection ends.
        await locker.query('BEGIN');
        await locker.query('SELECT 1 FROM runs WHERE id = $1 FOR UPDATE', [runId]);
        await terminateBlocked(locker, 'INSERT INTO run_log_chunks');
      } finally {
        await locker.query('ROLLBACK').catch(() => undefined);
        await locker.end();
      }
      const run = await waitForRun(sys.call, runId, 120_000);
      assert.equal(run.status, 'succeeded', JSON.stringify(run));
      assert.equal(await logOf(runId), expected, 'every line once, in order');
      await stillWorking();
    });

    /** Reads an SSE stream until `until` says so; answers the events read. */
    async function follow(url: string, until: (events: { event: string; data: string }[]) => boolean, signal?: AbortSignal) {
      const res = await fetch(url, { headers: auth(), signal });
      assert.equal(res.status, 200);
      const events: { event: string; data: string }[] = [];
      let text = '';
      const decoder = new TextDecoder();
      try {
        for await (const piece of res.body!) {
          text += decoder.decode(piece as Uint8Array, { stream: true });
          let end: number;
          while ((end = text.indexOf('\n\n')) >= 0) {
            const block = text.slice(0, end);
            text = text.slice(end + 2);
            const event = /^event: (.*)$/m.exec(block)?.[1];
            if (event) events.push({ event, data: /^data: (.*)$/m.exec(block)?.[1] ?? '' });
          }
          if (until(events)) break;
        }
      } catch (err) {
        if (!signal?.aborted) throw err;
      }
      return events;
    }

    it('follows a log again after a follower went away, and ends a follow whose database connection failed with an error event', async () => {
      const template = await scriptTemplate(CHATTY);
      const runId = await startRun(await deployment(template));
      await chunksStored(runId);
      const path = `/v1/runs/${runId}/logs?follow=true`;
      // Followers that go away mid-stream.
      for (let i = 0; i < 3; i++) {
        const gone = new AbortController();
        const events = await follow(`${sys.api.url}${path}`, (e) => e.length > 0, gone.signal);
        gone.abort();
        assert.ok(events.length > 0);
      }
      // A second API with a pool of its own, so that exactly its connections can be ended.
      const appName = uniqueName('gg-sse');
      const url = new URL(env('GG_TEST_DATABASE_URL'));
      url.searchParams.set('application_name', appName);
      const db = createPool(url.toString(), 2);
      const locker = await session();
      try {
        await withLoggedApi(async (apiUrl, logged) => {
          const failing = follow(`${apiUrl}${path}`, (e) => e.some((x) => x.event === 'end' || x.event === 'error'));
          await soon('the second API to follow the log', async () => {
            const { rows } = await sys.db.query('SELECT 1 FROM pg_stat_activity WHERE application_name = $1', [appName]);
            return rows.length > 0 ? true : undefined;
          });
          await locker.query('BEGIN');
          await locker.query('LOCK TABLE run_log_chunks IN ACCESS EXCLUSIVE MODE');
          await terminateBlocked(locker, 'SELECT seq, stream', `AND application_name = '${appName}'`);
          await locker.query('ROLLBACK');
          const events = await failing;
          const last = events[events.length - 1]!;
          assert.equal(last.event, 'error', JSON.stringify(events.slice(-3)));
          assert.equal((JSON.parse(last.data) as { code: string }).code, 'DEPENDENCY_UNAVAILABLE');
          assert.equal(logged.length, 1, 'and the API logged the failure once');
          assert.match(logged[0]!, /terminating connection/);
        }, db);
      } finally {
        await locker.query('ROLLBACK').catch(() => undefined);
        await locker.end();
        await db.end();
      }
      // The main API follows the same log to its end.
      const events = await follow(`${sys.api.url}${path}`, (e) => e.some((x) => x.event === 'end'));
      assert.equal(events[events.length - 1]!.event, 'end');
      assert.equal((await waitForRun(sys.call, runId)).status, 'succeeded');
      assert.equal(await logOf(runId), expected);
      await stillWorking();
    });
  });

  describe('uploads and downloads', () => {
    const sourcesUrl = () => `${sys.api.url}/v1/template-sources`;
    const upload = (body: Buffer, contentType: string) =>
      fetch(sourcesUrl(), { method: 'POST', body, headers: { ...auth(sys.tokens.author), 'content-type': contentType } });

    it('takes a template source after uploads cut half-way and bodies that are not the archive they claim', async () => {
      const big = gzipSync(randomBytes(8 * 1024 * 1024));
      await withLoggedApi(async (url, logged) => {
        for (let i = 0; i < 3; i++) {
          await cutShort(`${url}/v1/template-sources`, { method: 'POST', headers: { ...auth(sys.tokens.author), 'content-type': 'application/gzip' }, body: big, sendBytes: 1024 * 1024 });
        }
        await new Promise((r) => setTimeout(r, 200));
        assert.deepEqual(logged, [], 'an upload its client cut off is no failure of the API');
      });
      const good = await tgzOf({ 'Dockerfile': 'FROM scratch\n', 'main.sh': 'echo hi\n' });
      for (const [body, type] of [
        [randomBytes(64 * 1024), 'application/gzip'],
        [good.subarray(0, Math.floor(good.length / 2)), 'application/gzip'],
        [good, 'application/zip'],
        [gzipSync(randomBytes(64 * 1024)), 'application/gzip'],
      ] as const) {
        const res = await upload(body, type);
        assert.equal(res.status, 422);
        assert.equal(((await res.json()) as { code: string }).code, 'SOURCE_REJECTED');
      }
      const res = await upload(good, 'application/gzip');
      assert.equal(res.status, 201, await res.clone().text());
    });

    it('stores a run\'s state through the agent API after an upload cut half-way, and serves it after a download cut half-way', async () => {
      // A node without a worker: the run stays active, so its agent credential is valid.
      const idleNode = uniqueName('idle');
      await sys.db.query('INSERT INTO nodes (id, description) VALUES ($1, $2)', [idleNode, 'no worker']);
      const template = await scriptTemplate('#!/bin/sh\necho never runs\n');
      const deploymentId = await deployment(template, idleNode);
      const runId = await startRun(deploymentId);
      const credential = `ggr_${randomBytes(16).toString('hex')}`;
      await grantRunAgent(sys.db, { runId, deploymentId, restoreVersion: undefined, credential });
      const stateUrl = `${sys.api.url}/v1/agent/runs/${runId}/state`;
      // As the node gateway passes a node's runner call on: its secret, and the node its certificate names.
      const gatewaySecret = (await readFile(sys.config.nodes.gatewaySecretFile, 'utf8')).trim();
      const headers = { authorization: `Bearer ${credential}`, 'content-type': 'application/gzip', 'x-glider-gateway': gatewaySecret, 'x-glider-node': idleNode };
      try {
        const archive = gzipSync(randomBytes(12 * 1024 * 1024), { level: 0 });
        await withLoggedApi(async (url, logged) => {
          for (let i = 0; i < 3; i++) await cutShort(`${url}/v1/agent/runs/${runId}/state`, { method: 'PUT', headers, body: archive, sendBytes: 2 * 1024 * 1024 });
          await new Promise((r) => setTimeout(r, 200));
          assert.deepEqual(logged, [], 'an upload its client cut off is no failure of the API');
        });
        const put = await fetch(stateUrl, { method: 'PUT', body: archive, headers });
        assert.equal(put.status, 200, await put.clone().text());
        const written = (await put.json()) as { version: number; sha256: string };
        assert.equal(written.sha256, sha256(archive));

        await grantRunAgent(sys.db, { runId, deploymentId, restoreVersion: written.version, credential });
        for (let i = 0; i < 3; i++) {
          const cut = await cutShort(stateUrl, { method: 'GET', headers, readBytes: 256 * 1024 });
          assert.equal(cut.status, 200);
        }
        const get = await fetch(stateUrl, { headers });
        assert.equal(get.status, 200);
        assert.equal(sha256(Buffer.from(await get.arrayBuffer())), written.sha256);
      } finally {
        await sys.call('POST', `/v1/runs/${runId}/cancel`);
        await eventually('the idle run to end', async () => {
          const r = await sys.call<{ status: string }>('GET', `/v1/runs/${runId}`);
          return ['cancelled', 'failed'].includes(r.body.status) ? true : undefined;
        }, 60_000);
      }
      await stillWorking();
    });
  });
});
