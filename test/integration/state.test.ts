import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { createDeployment, registerExampleTemplate, uniqueName } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { COUNTING_TEMPLATE, MiB, handMadeArchive, stateBench, systemBox, untrustedStateChecks, type StateBench } from '../support/state-bench.js';
import { env, eventually, startTestSystem, type TestSystem } from '../support/system.js';
import type { SecretBox } from '../../core/crypto.js';

interface Run {
  id: string;
  status: string;
  reason: string | null;
  message: string | null;
  outputs: Record<string, unknown> | null;
  warnings: string[];
  stateVersionFrom: number | null;
  stateVersion: number | null;
}

/** Tar entries (name → type and content) of a tar.gz, read without any library of ours. */
function tarEntries(gz: Buffer): Map<string, { type: string; linkname: string; data: Buffer }> {
  const tar = gunzipSync(gz);
  const entries = new Map<string, { type: string; linkname: string; data: Buffer }>();
  let at = 0;
  while (at + 512 <= tar.length && tar[at] !== 0) {
    const field = (o: number, n: number) => tar.subarray(at + o, at + o + n).toString('utf8').replace(/\0.*$/s, '');
    const prefix = field(345, 155);
    const name = (prefix ? `${prefix}/` : '') + field(0, 100);
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const type = { '0': 'file', '': 'file', '2': 'symlink', '5': 'directory' }[field(156, 1)] ?? field(156, 1);
    entries.set(name, { type, linkname: field(157, 100), data: tar.subarray(at + 512, at + 512 + size) });
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return entries;
}

describe('state versions', () => {
  let sys: TestSystem;
  let box: SecretBox;
  let bench: StateBench;
  before(async () => {
    sys = await startTestSystem();
    box = await systemBox(sys);
    bench = stateBench(sys, box, { image: await scriptImage(sys.docker, COUNTING_TEMPLATE), target: { kind: 'node', node: sys.nodeId } });
  });
  after(async () => {
    await sys.stop();
  });

  async function run(deploymentId: string, action = 'deploy', timeoutMs = 30_000): Promise<Run> {
    const started = await sys.call<Run>('POST', `/v1/deployments/${deploymentId}/runs`, { action });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    return eventually('the run to end', async () => {
      const r = await sys.call<Run>('GET', `/v1/runs/${started.body.id}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    }, timeoutMs);
  }

  it('carries /state from run to run, archiving it after a failed run too', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'count' }, { kind: 'node', node: sys.nodeId });
    const first = await run(id);
    assert.equal(first.outputs?.runCount, 1);
    assert.equal(first.stateVersionFrom, null);
    assert.equal(first.stateVersion, 1);
    const second = await run(id, 'destroy');
    assert.equal(second.outputs?.runCount, 2, 'the second run saw the state the first one left');
    assert.equal(second.stateVersionFrom, 1);
    assert.equal(second.stateVersion, 2);
    const versions = await sys.call<{ items: { version: number; runId: string; sha256: string; sizeBytes: number }[] }>('GET', `/v1/deployments/${id}/state-versions`);
    assert.deepEqual(versions.body.items.map((v) => [v.version, v.runId]), [[2, second.id], [1, first.id]]);
    const deployment = await sys.call<{ currentStateVersion: number }>('GET', `/v1/deployments/${id}`);
    assert.equal(deployment.body.currentStateVersion, 2);

    // A failing run still leaves a version, and the next run starts from it.
    const failing = await registerExampleTemplate(sys.call);
    const dep = await createDeployment(sys.call, failing, { message: 'fail', exit_code: 4 }, { kind: 'node', node: sys.nodeId });
    const failed = await run(dep);
    assert.equal(failed.status, 'failed');
    assert.equal(failed.stateVersion, 1);
    const again = await run(dep);
    assert.equal(again.outputs?.runCount, 2);
  });

  it('serves a version as the tar.gz the run left, with its checksum, to operators only', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'archive' }, { kind: 'node', node: sys.nodeId });
    const first = await run(id);
    const res = await fetch(`${sys.api.url}/v1/deployments/${id}/state-versions/${first.stateVersion}/archive`, {
      headers: { authorization: `Bearer ${sys.tokens.operator}` },
    });
    assert.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(createHash('sha256').update(body).digest('hex'), res.headers.get('x-checksum-sha256'));
    const entries = tarEntries(body);
    assert.equal(entries.get('run-count')?.data.toString(), '1\n');
    assert.deepEqual(JSON.parse(entries.get('outputs.json')!.data.toString()), first.outputs);
    const viewer = await fetch(`${sys.api.url}/v1/deployments/${id}/state-versions/1/archive`, { headers: { authorization: `Bearer ${sys.tokens.viewer}` } });
    assert.equal(viewer.status, 403);
    assert.equal((await sys.call('GET', `/v1/deployments/${id}/state-versions/99/archive`)).status, 404);
  });

  it('stores only ciphertext: no piece of the archive is in state_chunks', async () => {
    const id = await bench.countingDeployment();
    const first = await bench.run(id);
    assert.equal(first.status, 'succeeded', first.message ?? '');
    const res = await bench.download(id, first.stateVersion!);
    assert.equal(res.status, 200);
    // The archive as the run left it: 2.5 MiB of random bytes, which gzip stores as they are (stored blocks),
    // so a plaintext store would hold long runs of these very bytes.
    const archive = Buffer.from(await res.arrayBuffer());
    assert.ok(archive.length > 2.5 * MiB, `${archive.length} bytes`);
    const stored = Buffer.concat(await bench.storedChunks(id, first.stateVersion!));
    assert.equal(stored.length, archive.length + 3 * 37, 'three chunks, each the size of its plaintext and a 37-byte header');
    let seen = 0;
    for (let at = 0; at + 32 <= archive.length; at += 4096) {
      assert.equal(stored.indexOf(archive.subarray(at, at + 32)), -1, `bytes ${at}..${at + 32} of the archive are stored as they are`);
      seen++;
    }
    assert.ok(seen > 600);
  });

  // Chunks moved from another deployment, version or place, and a version sealed under another key.
  const untrusted = untrustedStateChecks(() => ({ bench, box }));
  it('refuses a version whose chunks were moved from another deployment: the run fails state-corrupt at once, the download answers 409', () => untrusted.movedFromAnotherDeployment());

  it('refuses a version whose chunks were moved from another version: the run fails state-corrupt at once, the download answers 409', () => untrusted.movedFromAnotherVersion());

  it('refuses a version whose chunks were swapped, at the first chunk, before any byte of it is used', () => untrusted.swapped());

  it('names a version sealed under another key state-key-mismatch, not damage: the run fails at once, the download answers 409', () => untrusted.sealedUnderAnotherKey());

  it('rolls back to an earlier version as a new one, refused while a run is active', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'rollback' }, { kind: 'node', node: sys.nodeId });
    await run(id);
    await run(id);
    const third = await run(id);
    assert.equal(third.outputs?.runCount, 3);
    const rolled = await sys.call<{ version: number; runId: string | null; sha256: string }>('POST', `/v1/deployments/${id}/state-versions/1/rollback`);
    assert.equal(rolled.status, 201);
    assert.equal(rolled.body.version, 4);
    assert.equal(rolled.body.runId, null);
    const versions = await sys.call<{ items: { version: number; sha256: string }[] }>('GET', `/v1/deployments/${id}/state-versions`);
    assert.equal(versions.body.items.find((v) => v.version === 1)!.sha256, rolled.body.sha256);
    const next = await run(id);
    assert.equal(next.stateVersionFrom, 4);
    assert.equal(next.outputs?.runCount, 2, 'the run after the rollback saw version 1');
    assert.equal((await sys.call('POST', `/v1/deployments/${id}/state-versions/99/rollback`)).status, 404);

    const slow = await createDeployment(sys.call, template, { message: 'slow', sleep_seconds: 3 }, { kind: 'node', node: sys.nodeId });
    await run(slow);
    const active = await sys.call<{ id: string }>('POST', `/v1/deployments/${slow}/runs`, { action: 'deploy' });
    const refused = await sys.call<{ code: string }>('POST', `/v1/deployments/${slow}/state-versions/1/rollback`);
    assert.equal(refused.status, 409);
    assert.equal(refused.body.code, 'RUN_IN_PROGRESS');
    const purgeRefused = await sys.call<{ code: string }>('DELETE', `/v1/deployments/${slow}`);
    assert.equal(purgeRefused.status, 409);
    await eventually('the run to end', async () => {
      const r = await sys.call<{ status: string }>('GET', `/v1/runs/${active.body.id}`);
      return r.body.status === 'succeeded' ? r : undefined;
    });
  });

  it('purges a deployment with its runs, logs, state versions and workflow', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'purge' }, { kind: 'node', node: sys.nodeId });
    const done = await run(id);
    const log = await fetch(`${sys.api.url}/v1/runs/${done.id}/logs`, { headers: { authorization: `Bearer ${sys.tokens.viewer}` } });
    assert.ok((await log.text()).includes('example template'));
    const viewer = await fetch(`${sys.api.url}/v1/deployments/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${sys.tokens.viewer}` } });
    assert.equal(viewer.status, 403);
    const purged = await fetch(`${sys.api.url}/v1/deployments/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${sys.tokens.operator}` } });
    assert.equal(purged.status, 204);
    assert.equal((await sys.call('GET', `/v1/deployments/${id}`)).status, 404);
    assert.equal((await sys.call('GET', `/v1/runs/${done.id}`)).status, 404);
    for (const [table, column] of [['runs', 'deployment_id'], ['state_versions', 'deployment_id'], ['state_chunks', 'deployment_id']] as const) {
      const { rows } = await sys.db.query<{ n: string }>(`SELECT count(*) n FROM ${table} WHERE ${column} = $1`, [id]);
      assert.equal(Number(rows[0]!.n), 0, table);
    }
    const logs = await sys.db.query<{ n: string }>('SELECT count(*) n FROM run_log_chunks WHERE run_id = $1', [done.id]);
    assert.equal(Number(logs.rows[0]!.n), 0);
    const described = await eventually('the workflow to end', async () => {
      const d = await sys.client.workflow.getHandle(`deployment-${id}`).describe();
      return d.status.name === 'RUNNING' ? undefined : d;
    });
    assert.equal(described.status.name, 'TERMINATED');
    assert.equal((await sys.call('DELETE', `/v1/deployments/${id}`)).status, 404);
  });

  it('round-trips a 200 MB state with a matching checksum', async () => {
    const image = await scriptImage(
      sys.docker,
      `#!/bin/sh
if [ ! -e /state/big.sum ]; then
  head -c 209715200 /dev/urandom > /state/big
  cd /state && sha256sum big > big.sum
  exit 0
fi
cd /state && sha256sum -c big.sum || exit 20
`,
    );
    const name = uniqueName('big');
    await sys.call('POST', '/v1/templates', { name });
    await sys.call('POST', `/v1/templates/${name}/versions`, { image });
    const id = await createDeployment(sys.call, name, {}, { kind: 'node', node: sys.nodeId });
    let t0 = Date.now();
    const first = await run(id, 'deploy', 240_000);
    console.log(`# archiving 200 MB of random data took ${Date.now() - t0} ms`);
    assert.equal(first.status, 'succeeded', first.message ?? '');
    t0 = Date.now();
    const second = await run(id, 'deploy', 240_000);
    console.log(`# restoring, checking and archiving it again took ${Date.now() - t0} ms`);
    assert.equal(second.status, 'succeeded', `the restored file failed its checksum: ${second.message}`);
    const versions = await sys.call<{ items: { version: number; sizeBytes: number }[] }>('GET', `/v1/deployments/${id}/state-versions`);
    assert.ok(versions.body.items.every((v) => v.sizeBytes > 200 * 1024 * 1024), 'random data does not compress');
  });

  it('archives links as links, skips FIFOs, and restores a 1 GiB sparse file sparse', async () => {
    const image = await scriptImage(
      sys.docker,
      `#!/bin/sh
if [ ! -e /state/made ]; then
  ln -s /etc/passwd /state/host-link
  ln -s ../../../../../../tmp /state/escape
  mkfifo /state/fifo
  mkdir -p /state/dir/sub && echo nested > /state/dir/sub/file
  dd if=/dev/zero of=/state/sparse bs=1 count=0 seek=1073741824 2>/dev/null
  echo "$1" > /state/made
  exit 0
fi
# Second run: check what came back.
[ -L /state/host-link ] && [ "$(readlink /state/host-link)" = /etc/passwd ] || { echo "link not restored as a link"; exit 10; }
[ -L /state/escape ] || { echo "escape link missing"; exit 11; }
[ ! -e /state/fifo ] || { echo "fifo restored"; exit 12; }
[ "$(cat /state/dir/sub/file)" = nested ] || { echo "nested file wrong"; exit 13; }
[ "$(stat -c %s /state/sparse)" = 1073741824 ] || { echo "sparse size wrong"; exit 14; }
# What the restore allocated on the node's disk for it.
echo "{\\"sparseBlocks\\": $(stat -c %b /state/sparse), \\"blockBytes\\": $(stat -c %B /state/sparse)}" > /state/outputs.json
exit 0
`,
    );
    const name = uniqueName('hostile');
    await sys.call('POST', '/v1/templates', { name });
    await sys.call('POST', `/v1/templates/${name}/versions`, { image });
    const id = await createDeployment(sys.call, name, {}, { kind: 'node', node: sys.nodeId });
    let t0 = Date.now();
    const first = await run(id, 'deploy', 180_000);
    console.log(`# archiving the 1 GiB sparse file took ${Date.now() - t0} ms`);
    assert.equal(first.status, 'succeeded', first.message ?? '');
    assert.ok(first.warnings.some((w) => w.includes('fifo')), JSON.stringify(first.warnings));
    t0 = Date.now();
    const second = await run(id, 'deploy', 180_000);
    console.log(`# restoring and archiving it again took ${Date.now() - t0} ms`);
    assert.equal(second.status, 'succeeded', `second run: ${second.message}`);
    assert.equal(second.stateVersionFrom, first.stateVersion);
    const allocated = Number(second.outputs?.sparseBlocks) * Number(second.outputs?.blockBytes);
    console.log(`# the restored 1 GiB sparse file takes ${allocated} bytes of disk`);
    assert.ok(Number.isInteger(allocated), JSON.stringify(second.outputs));
    assert.ok(allocated < MiB, `the 1 GiB sparse file came back sparse (${allocated} bytes allocated)`);
  });

  it('restores nothing outside /state from an archive naming ../, an absolute path or a way through a link: the run fails state-corrupt at once', async () => {
    const id = await bench.countingDeployment();
    assert.equal((await bench.run(id)).stateVersion, 1);
    const outside = path.join(env('GG_TEST_SCRATCH'), `outside-${randomBytes(4).toString('hex')}`);
    await mkdir(outside, { recursive: true });
    const tag = randomBytes(4).toString('hex');
    // Short: a name over tar's 100 characters is split into a prefix and a name, and loses its leading '/'.
    const absolute = `/tmp/gg-state-absolute-${tag}`;
    // The run's /state is <workDir>/runs/<run>/state on the node; ../../../ is the node's work folder.
    const cases = [
      { entries: [{ name: 'ok' }, { name: `../../../escaped-${tag}` }], target: path.join(sys.config.node.workDir, `escaped-${tag}`) },
      { entries: [{ name: 'ok' }, { name: absolute }], target: absolute },
      { entries: [{ name: 'out', type: 'symlink' as const, linkname: outside }, { name: `out/through-${tag}` }], target: path.join(outside, `through-${tag}`) },
    ];
    try {
      for (const [i, c] of cases.entries()) {
        // A template cannot make such an archive through packState, but what a cluster run's runner uploads is the pod's to say.
        const archive = await handMadeArchive(c.entries);
        assert.deepEqual([...tarEntries(archive).keys()], c.entries.map((e) => e.name), 'the archive holds the names as written');
        await bench.plantArchive(id, 1, archive);
        const refused = await bench.refusedRun(id, 'state-corrupt', i + 1);
        assert.match(refused.message ?? '', /cannot be unpacked/);
        assert.equal(existsSync(c.target), false, `${c.target} was written`);
      }
    } finally {
      await rm(absolute, { force: true });
    }
  });
});

describe('state version retention', () => {
  let sys: TestSystem;
  before(async () => {
    sys = await startTestSystem({ env: { GLIDERGUN_STATE_VERSIONS_KEPT: '2' } });
  });
  after(async () => {
    await sys.stop();
  });

  it('keeps the newest versions, deletes older ones with their data, and never the current one', async () => {
    const template = await registerExampleTemplate(sys.call);
    const id = await createDeployment(sys.call, template, { message: 'keep' }, { kind: 'node', node: sys.nodeId });
    const runOnce = async () => {
      const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
      return eventually('the run to end', async () => {
        const r = await sys.call<{ status: string; outputs: { runCount: number } }>('GET', `/v1/runs/${started.body.id}`);
        return r.body.status === 'succeeded' ? r.body : undefined;
      });
    };
    for (let i = 0; i < 4; i++) await runOnce();
    const list = async () => (await sys.call<{ items: { version: number }[] }>('GET', `/v1/deployments/${id}/state-versions`)).body.items.map((v) => v.version);
    assert.deepEqual(await list(), [4, 3]);
    const chunks = await sys.db.query<{ version: number }>('SELECT DISTINCT version FROM state_chunks WHERE deployment_id = $1 ORDER BY version', [id]);
    assert.deepEqual(chunks.rows.map((r) => r.version), [3, 4], 'the data of deleted versions is gone too');
    // A rollback makes a new current version; the run after it still counts from the rolled-back state.
    assert.equal((await sys.call('POST', `/v1/deployments/${id}/state-versions/3/rollback`)).status, 201);
    assert.deepEqual(await list(), [5, 4]);
    assert.equal((await runOnce()).outputs.runCount, 4);
  });
});
