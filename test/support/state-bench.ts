/**
 * What the tests of stored state share: a template that leaves several chunks of state, database surgery
 * as someone with write access to Postgres could do it, and the tests that a version which cannot be
 * trusted is refused, run on each target (test/integration/state.test.ts on a Docker node,
 * state-kubernetes.test.ts on the cluster).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { SecretBox } from '../../core/crypto.js';
import type { Target } from '../../core/domain.js';
import { loadEncryptionKey } from '../../core/keys.js';
import { createDeployment, executeRunAttempts, uniqueName, waitForRun, type RunBody } from './fixtures.js';
import type { TestSystem } from './system.js';

export const MiB = 1024 * 1024;
/** What each stored chunk is bound to (its associated data), written here apart from the code that seals them. */
export const boundTo = (deploymentId: string, version: number, idx: number) => `state/${deploymentId}/${version}/${idx}`;
export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();

/** deploy: says it started, counts its runs in /state, and leaves 2.5 MiB of random bytes there (three stored chunks). */
export const COUNTING_TEMPLATE = `#!/bin/sh
set -e
echo "template started"
n=$(cat /state/count 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /state/count
head -c 2621440 /dev/urandom > /state/blob
echo "{\\"count\\": $n}" > /state/outputs.json
`;

/** A tar.gz made by hand, holding what packState never writes. */
export async function handMadeArchive(entries: { name: string; type?: 'file' | 'symlink'; linkname?: string; body?: string }[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: e.linkname! });
    else pack.entry({ name: e.name }, e.body ?? 'planted\n');
  }
  pack.finalize();
  return gzipSync(await buffer(Readable.from(pack)));
}

/** The key box a test system seals with. */
export async function systemBox(sys: TestSystem): Promise<SecretBox> {
  return new SecretBox(await loadEncryptionKey({ base64: sys.config.security.encryptionKey, file: sys.config.security.encryptionKeyFile }));
}

/**
 * What the tests of stored state do on one test system: run the counting template on `target`, download a
 * version, and change what the database holds as someone with write access to it could.
 */
export function stateBench(sys: TestSystem, box: SecretBox, opts: { image: string; target: Target }) {
  async function run(id: string): Promise<RunBody> {
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    return waitForRun(sys.call, started.body.id);
  }
  const download = (id: string, version: number) =>
    fetch(`${sys.api.url}/v1/deployments/${id}/state-versions/${version}/archive`, { headers: { authorization: `Bearer ${sys.tokens.operator}` } });
  async function stdout(runId: string): Promise<string> {
    const res = await fetch(`${sys.api.url}/v1/runs/${runId}/logs?stream=stdout`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } });
    return res.text();
  }
  async function countingDeployment(): Promise<string> {
    const name = uniqueName('counting');
    assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
    assert.equal((await sys.call('POST', `/v1/templates/${name}/versions`, { image: opts.image })).status, 201);
    return createDeployment(sys.call, name, {}, opts.target);
  }
  /** The stored chunks of a version, in order. */
  async function storedChunks(id: string, version: number): Promise<Buffer[]> {
    const { rows } = await sys.db.query<{ data: Buffer }>('SELECT data FROM state_chunks WHERE deployment_id = $1 AND version = $2 ORDER BY idx', [id, version]);
    return rows.map((r) => r.data);
  }
  /**
   * Replaces what a version holds, as someone with write access to the database could: each chunk's digest
   * and the version's chain of digests are made to agree, so only the encryption can tell.
   */
  async function storeChunks(id: string, version: number, sealed: Buffer[], meta?: { sha256: Buffer; sizeBytes: number }): Promise<void> {
    await sys.db.query('DELETE FROM state_chunks WHERE deployment_id = $1 AND version = $2', [id, version]);
    for (const [idx, data] of sealed.entries()) {
      await sys.db.query('INSERT INTO state_chunks (deployment_id, version, idx, data, digest) VALUES ($1, $2, $3, $4, $5)', [id, version, idx, data, sha256(data)]);
    }
    await sys.db.query(
      `UPDATE state_versions SET chunk_count = $3, chunks_sha256 = $4, sha256 = coalesce($5, sha256), size_bytes = coalesce($6, size_bytes)
        WHERE deployment_id = $1 AND version = $2`,
      [id, version, sealed.length, sha256(Buffer.concat(sealed.map(sha256))), meta?.sha256 ?? null, meta?.sizeBytes ?? null],
    );
  }
  /** A version's stored chunks and checksums copied from another version (of this deployment or another). */
  async function copyVersion(from: { id: string; version: number }, to: { id: string; version: number }): Promise<void> {
    const { rows } = await sys.db.query<{ sha256: Buffer; size_bytes: string }>('SELECT sha256, size_bytes FROM state_versions WHERE deployment_id = $1 AND version = $2', [
      from.id,
      from.version,
    ]);
    await storeChunks(to.id, to.version, await storedChunks(from.id, from.version), { sha256: rows[0]!.sha256, sizeBytes: Number(rows[0]!.size_bytes) });
  }
  /** A version's content replaced by `archive`, sealed as Glider Gun seals it. */
  async function plantArchive(id: string, version: number, archive: Buffer): Promise<void> {
    const sealed: Buffer[] = [];
    for (let at = 0, idx = 0; at < archive.length; at += MiB, idx++) sealed.push(box.seal(archive.subarray(at, at + MiB), boundTo(id, version, idx)));
    await storeChunks(id, version, sealed, { sha256: sha256(archive), sizeBytes: archive.length });
  }
  /** The run restoring a version it cannot trust: failed with `reason` before the template started, in one attempt. */
  async function refusedRun(id: string, reason: string, runsBefore: number): Promise<RunBody> {
    const refused = await run(id);
    assert.equal(refused.status, 'failed', JSON.stringify(refused));
    assert.equal(refused.reason, reason, refused.message ?? '');
    assert.equal(refused.stateVersion, null, 'nothing archived from a run whose state was refused');
    assert.ok(!(await stdout(refused.id)).includes('template started'), 'the template did not start');
    assert.deepEqual(await executeRunAttempts(sys.client, id), Array<number>(runsBefore + 1).fill(1), 'each run executed once: the refusal is not retried');
    return refused;
  }
  return { run, download, countingDeployment, storedChunks, storeChunks, copyVersion, plantArchive, refusedRun };
}

export type StateBench = ReturnType<typeof stateBench>;

/**
 * A version whose chunks were moved (from another deployment, another version, another place) or sealed under
 * another key is refused before any byte of it is used: the download answers 409 with the code, and the run
 * fails with the reason in one attempt, before the template starts. The checks of each target's tests (their
 * titles stay in the test files, where test/mutants names them).
 */
export function untrustedStateChecks(ctx: () => { bench: StateBench; box: SecretBox }) {
  return {
    async movedFromAnotherDeployment(): Promise<void> {
      const { bench } = ctx();
      const victim = await bench.countingDeployment();
      const other = await bench.countingDeployment();
      assert.equal((await bench.run(victim)).stateVersion, 1);
      assert.equal((await bench.run(other)).stateVersion, 1);
      // The other deployment's state (intact, with its own checksums) under the victim's name.
      await bench.copyVersion({ id: other, version: 1 }, { id: victim, version: 1 });
      const res = await bench.download(victim, 1);
      assert.equal(res.status, 409, 'an error before any byte, not a 200');
      assert.equal(((await res.json()) as { code: string }).code, 'STATE_CORRUPT');
      const refused = await bench.refusedRun(victim, 'state-corrupt', 1);
      assert.match(refused.message ?? '', /state version 1 of \S+ is damaged: chunk 0 does not decrypt/);
    },

    async movedFromAnotherVersion(): Promise<void> {
      const { bench } = ctx();
      const id = await bench.countingDeployment();
      assert.equal((await bench.run(id)).stateVersion, 1);
      assert.equal((await bench.run(id)).stateVersion, 2);
      // Version 1 (intact, with its own checksums) replayed as version 2: a rollback nobody asked for.
      await bench.copyVersion({ id, version: 1 }, { id, version: 2 });
      const res = await bench.download(id, 2);
      assert.equal(res.status, 409, 'an error before any byte, not a 200');
      assert.equal(((await res.json()) as { code: string }).code, 'STATE_CORRUPT');
      const refused = await bench.refusedRun(id, 'state-corrupt', 2);
      assert.match(refused.message ?? '', /chunk 0 does not decrypt/);
    },

    async swapped(): Promise<void> {
      const { bench } = ctx();
      const id = await bench.countingDeployment();
      assert.equal((await bench.run(id)).stateVersion, 1);
      const [c0, c1, ...rest] = await bench.storedChunks(id, 1);
      assert.ok(c0 && c1 && rest.length === 1);
      await bench.storeChunks(id, 1, [c1, c0, ...rest]);
      // Each chunk is its own, only in another place: it must not open there (the archive's checksum would
      // notice only after every byte had been restored or sent).
      const res = await bench.download(id, 1);
      assert.equal(res.status, 409, 'an error before any byte, not a 200 cut at the end');
      assert.equal(((await res.json()) as { code: string }).code, 'STATE_CORRUPT');
      const refused = await bench.refusedRun(id, 'state-corrupt', 1);
      assert.match(refused.message ?? '', /chunk 0 does not decrypt/);
    },

    async sealedUnderAnotherKey(): Promise<void> {
      const { bench, box } = ctx();
      const id = await bench.countingDeployment();
      assert.equal((await bench.run(id)).stateVersion, 1);
      // The same content sealed under another key, in its right place: what an installation whose key was replaced finds.
      const otherKey = new SecretBox(randomBytes(32));
      const chunks = await bench.storedChunks(id, 1);
      await bench.storeChunks(id, 1, chunks.map((c, idx) => otherKey.seal(box.open(c, boundTo(id, 1, idx)), boundTo(id, 1, idx))));
      const res = await bench.download(id, 1);
      assert.equal(res.status, 409);
      const body = (await res.json()) as { code: string; message: string };
      assert.equal(body.code, 'STATE_KEY_MISMATCH');
      assert.match(body.message, /GLIDERGUN_ENCRYPTION_KEY/);
      const refused = await bench.refusedRun(id, 'state-key-mismatch', 1);
      assert.match(refused.message ?? '', /sealed under another encryption key/);
      assert.doesNotMatch(refused.message ?? '', /roll back to/, 'a rollback cannot help: every version sealed under that key is alike');
    },
  };
}
