/**
 * State versions cannot be half-written or silently damaged (issue 10): two attempts of one run writing at
 * once end with one complete, correct version; a damaged version is caught before any run or download
 * trusts it; a state over the deployment's limit fails the run and leaves the previous version current;
 * a purge gives its space back for the next writes. The run-level checks go through the API on both targets.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { SecretBox } from '../../core/crypto.js';
import { StateStorageError, readStateVersion, writeStateVersion } from '../../core/db/state.js';
import { migrate } from '../../core/db/migrate.js';
import { loadEncryptionKey } from '../../core/keys.js';
import { adminUrlOf, dropDatabase, ensureDatabase, withDatabase } from '../../infra/dev/postgres.js';
import { executeRunAttempts, uniqueName, waitForRun, type RunBody } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { pushToRegistry } from '../support/registry.js';
import { env, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

const MiB = 1024 * 1024;

/** deploy: counts its runs in /state, and writes a blob of random bytes (small on the first run, 3 MiB after). */
const TEMPLATE = `#!/bin/sh
set -e
echo "template started: $1"
n=$(cat /state/count 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /state/count
if [ "$n" = 1 ]; then kb=64; else kb=3072; fi
head -c $((kb * 1024)) /dev/urandom > /state/blob
echo "{\\"count\\": $n}" > /state/outputs.json
`;

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of source) parts.push(p);
  return Buffer.concat(parts);
}

/** Yields `pieces`, waiting at `holdAt` until `release` resolves: an attempt caught half-way. */
async function* heldAt(pieces: Buffer[], holdAt: number, release: Promise<void>, reached: () => void): AsyncGenerator<Buffer> {
  for (let i = 0; i < pieces.length; i++) {
    if (i === holdAt) {
      reached();
      await release;
    }
    yield pieces[i]!;
  }
}

const pieces = (n: number) => Array.from({ length: n }, () => randomBytes(MiB));

describe('state version writes fenced per attempt', () => {
  let sys: TestSystem;
  let box: SecretBox;
  before(async () => {
    // No workers: the runs stay pending, and the test writes their versions as attempts of the adapter would.
    sys = await startTestSystem({ nodeWorker: false, clusterWorker: false });
    box = new SecretBox(await loadEncryptionKey({ base64: sys.config.security.encryptionKey, file: sys.config.security.encryptionKeyFile }));
  });
  after(async () => {
    await sys.stop();
  });

  async function pendingRun(): Promise<{ deploymentId: string; runId: string }> {
    const image = await scriptImage(sys.docker, TEMPLATE);
    const name = uniqueName('fenced');
    assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
    assert.equal((await sys.call('POST', `/v1/templates/${name}/versions`, { image })).status, 201);
    const dep = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, parameters: {}, target: { kind: 'node', node: sys.nodeId } });
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
    assert.equal(run.status, 202);
    return { deploymentId: dep.body.id, runId: run.body.id };
  }

  for (const order of ['the newer attempt finishes first', 'both write at once'] as const) {
    it(`ends with one complete, correct version when ${order}`, async () => {
      const ids = await pendingRun();
      const older = pieces(6);
      const newer = pieces(5);
      let releaseOlder!: () => void;
      let olderHeld!: () => void;
      const olderReachedHold = new Promise<void>((r) => (olderHeld = r));
      const olderWrite = writeStateVersion(sys.db, box, ids, heldAt(older, 3, new Promise((r) => (releaseOlder = r)), olderHeld));
      olderWrite.catch(() => undefined);
      await olderReachedHold;

      let newerWrite: Promise<unknown>;
      if (order === 'the newer attempt finishes first') {
        newerWrite = writeStateVersion(sys.db, box, ids, heldAt(newer, 99, Promise.resolve(), () => undefined));
        await newerWrite;
        releaseOlder();
      } else {
        // The newer attempt claims the version and is held half-way; the older one goes on writing meanwhile.
        let releaseNewer!: () => void;
        let newerHeld!: () => void;
        const newerReachedHold = new Promise<void>((r) => (newerHeld = r));
        newerWrite = writeStateVersion(sys.db, box, ids, heldAt(newer, 2, new Promise((r) => (releaseNewer = r)), newerHeld));
        newerWrite.catch(() => undefined);
        await newerReachedHold;
        releaseOlder();
        await assert.rejects(olderWrite, (err: unknown) => err instanceof StateStorageError && err.reason === 'state-write-superseded');
        releaseNewer();
        await newerWrite;
      }
      await assert.rejects(olderWrite, (err: unknown) => err instanceof StateStorageError && err.reason === 'state-write-superseded');

      const { rows } = await sys.db.query<{ version: number; status: string; chunk_count: number; sha256: Buffer }>(
        'SELECT version, status, chunk_count, sha256 FROM state_versions WHERE deployment_id = $1',
        [ids.deploymentId],
      );
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.status, 'complete');
      assert.equal(rows[0]!.chunk_count, newer.length);
      const stored = await collect(readStateVersion(sys.db, box, ids.deploymentId, rows[0]!.version));
      assert.ok(stored.equals(Buffer.concat(newer)), 'the version holds exactly what the newer attempt wrote');
      assert.ok(rows[0]!.sha256.equals(createHash('sha256').update(Buffer.concat(newer)).digest()));
    });
  }
});

describe('space comes back after a purge', () => {
  let sys: TestSystem;
  let box: SecretBox;
  let admin: string;
  const database = `gg_space_${process.pid}_${Date.now().toString(36)}`;
  before(async () => {
    // A database of its own: the sizes measured are this test's alone, whatever other files write meanwhile.
    admin = adminUrlOf(env('GG_TEST_DATABASE_URL'));
    await ensureDatabase(admin, database);
    const url = withDatabase(env('GG_TEST_DATABASE_URL'), database);
    await migrate(url);
    sys = await startTestSystem({ nodeWorker: false, clusterWorker: false, env: { DATABASE_URL: url } });
    box = new SecretBox(await loadEncryptionKey({ base64: sys.config.security.encryptionKey, file: sys.config.security.encryptionKeyFile }));
  });
  after(async () => {
    await sys.stop();
    await dropDatabase(admin, database);
  });

  it('makes a purged state\'s space reusable at once, so the next large state does not grow the database', async () => {
    const size = async () => Number((await sys.db.query<{ n: string }>(`SELECT pg_total_relation_size('state_chunks') AS n`)).rows[0]!.n);
    const image = await scriptImage(sys.docker, TEMPLATE);
    const name = uniqueName('space');
    assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
    assert.equal((await sys.call('POST', `/v1/templates/${name}/versions`, { image })).status, 201);
    const largeState = async () => {
      const dep = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, parameters: {}, target: { kind: 'node', node: sys.nodeId } });
      const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${dep.body.id}/runs`, { action: 'deploy' });
      await writeStateVersion(sys.db, box, { deploymentId: dep.body.id, runId: run.body.id }, heldAt(pieces(128), -1, Promise.resolve(), () => undefined));
      // The run never ran (no workers): end it so the deployment can be purged.
      await sys.db.query(`UPDATE runs SET status = 'cancelled', finished_at = now() WHERE id = $1`, [run.body.id]);
      return dep.body.id;
    };
    const before_ = await size();
    const first = await largeState();
    const afterFirst = await size();
    assert.equal((await sys.call('DELETE', `/v1/deployments/${first}`)).status, 204);
    const afterPurge = await size();
    await largeState();
    const afterSecond = await size();
    const mb = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
    console.log(`# state_chunks: before ${mb(before_)}, after 128 MiB ${mb(afterFirst)}, after purge ${mb(afterPurge)}, after the next 128 MiB ${mb(afterSecond)}`);
    assert.ok(afterFirst - before_ > 120 * MiB, 'the first state took its space');
    assert.ok(afterSecond <= afterFirst + 8 * MiB, `the second state reused the purged space (${mb(afterSecond)} vs ${mb(afterFirst)})`);
  });
});

for (const target of ['docker', 'kubernetes'] as const) {
  const skip = target === 'kubernetes' ? noCluster : false;
  describe(`damaged and oversized state on ${target === 'docker' ? 'a Docker node' : 'Kubernetes'}`, { skip }, () => {
    let sys: TestSystem;
    let image: string;
    before(async () => {
      sys = await startTestSystem(target === 'kubernetes' ? { nodeWorker: false, env: await kubernetesEnv() } : {});
      image = await pushToRegistry(await scriptImage(sys.docker, TEMPLATE));
    });
    after(async () => {
      await sys.stop();
    });

    async function deployment(limits: Record<string, unknown> = {}): Promise<string> {
      const name = uniqueName('integrity');
      assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
      assert.equal((await sys.call('POST', `/v1/templates/${name}/versions`, { image })).status, 201);
      const target_ = target === 'docker' ? { kind: 'node', node: sys.nodeId } : { kind: 'cluster' };
      const res = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, parameters: {}, target: target_, limits });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.id;
    }
    async function run(id: string): Promise<RunBody> {
      const res = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      return waitForRun(sys.call, res.body.id);
    }
    async function stdout(runId: string): Promise<string> {
      const res = await fetch(`${sys.api.url}/v1/runs/${runId}/logs?stream=stdout`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } });
      return res.text();
    }
    const executeAttempts = (id: string) => executeRunAttempts(sys.client, id);
    const download = (id: string, version: number) =>
      fetch(`${sys.api.url}/v1/deployments/${id}/state-versions/${version}/archive`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } });

    it('catches a chunk deleted by hand before any run or download trusts the version, and rolls back to the one before', async () => {
      const id = await deployment();
      assert.equal((await run(id)).stateVersion, 1);
      assert.equal((await run(id)).stateVersion, 2);
      await sys.db.query('DELETE FROM state_chunks WHERE deployment_id = $1 AND version = 2 AND idx = 1', [id]);

      const res = await download(id, 2);
      assert.equal(res.status, 409, 'an error before any byte, not a cut 200');
      assert.equal(((await res.json()) as { code: string }).code, 'STATE_CORRUPT');

      const broken = await run(id);
      assert.equal(broken.status, 'failed');
      assert.equal(broken.reason, 'state-corrupt');
      assert.match(broken.message ?? '', /state version 2 .*damaged/);
      assert.equal(broken.stateVersion, null);
      assert.ok(!(await stdout(broken.id)).includes('template started'), 'the template did not start on a damaged state');
      assert.deepEqual(await executeAttempts(id), [1, 1, 1], 'not retried');

      const back = await sys.call<{ version: number }>('POST', `/v1/deployments/${id}/state-versions/1/rollback`);
      assert.equal(back.status, 201, JSON.stringify(back.body));
      const after_ = await run(id);
      assert.equal(after_.status, 'succeeded');
      assert.equal(after_.outputs?.count, 2, 'the run started from version 1');
    });

    it('catches a chunk altered in place, on download and on restore', async () => {
      const id = await deployment();
      await run(id);
      const second = await run(id);
      await sys.db.query(
        `UPDATE state_chunks SET data = set_byte(data, 100, (get_byte(data, 100) + 1) % 256) WHERE deployment_id = $1 AND version = $2 AND idx = 2`,
        [id, second.stateVersion],
      );
      const res = await download(id, second.stateVersion!);
      assert.equal(res.status, 409);
      const broken = await run(id);
      assert.equal(broken.reason, 'state-corrupt', JSON.stringify(broken));
      assert.ok(!(await stdout(broken.id)).includes('template started'));
      assert.deepEqual(await executeAttempts(id), [1, 1, 1], 'not retried');
    });

    it('fails a run whose /state outgrows the deployment\'s limit, keeping the previous version current', async () => {
      const id = await deployment({ stateMaxMb: 1 });
      const first = await run(id);
      assert.equal(first.status, 'succeeded', JSON.stringify(first));
      const big = await run(id);
      assert.equal(big.status, 'failed');
      assert.equal(big.reason, 'state-too-large', JSON.stringify(big));
      assert.match(big.message ?? '', /limit of 1\.0 MiB/);
      assert.equal(big.stateVersion, null);
      const dep = await sys.call<{ currentStateVersion: number }>('GET', `/v1/deployments/${id}`);
      assert.equal(dep.body.currentStateVersion, first.stateVersion);
      const { rows } = await sys.db.query('SELECT version FROM state_versions WHERE deployment_id = $1 AND status = $2', [id, 'writing']);
      assert.equal(rows.length, 0, 'nothing half-written is left');
      assert.deepEqual(await executeAttempts(id), [1, 1], 'not retried');
    });
  });
}
