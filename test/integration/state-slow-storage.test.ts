/**
 * A slow store costs time, never an extra attempt (issue 10). Postgres is reached through a proxy that lets
 * what the system sends through at a set rate, slowed once the template runs so that storing its /state
 * takes several times the run activity's heartbeat timeout (20 s, workflows/deployment.ts). A cancel arrives
 * while the archive is being stored: the template has ended, so the archive completes and the outcome stays,
 * with a warning. On both targets the run's executeRun activity runs once, the version holds what the
 * template wrote, and the next run gets it back whole.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import tar from 'tar-stream';
import { registerBlobTemplate, waitForRun, type RunBody } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { pushToRegistry } from '../support/registry.js';
import { startSlowProxy, throughProxy, type SlowProxy } from '../support/slow-proxy.js';
import { env, eventually, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

/** What the template stores: incompressible, so the archive is as large as the blob. */
const BLOB_MIB = 24;
/** ~65 s to store 24 MiB: more than three heartbeat timeouts. */
const SLOW_BYTES_PER_SECOND = 384 * 1024;
const HEARTBEAT_TIMEOUT_MS = 20_000;

/**
 * deploy: $TF_VAR_mib MiB of random bytes into /state/blob, its sha256 beside it and in the outputs.
 * verify: the restored blob checked against the recorded sha256 (exit 1 on a mismatch).
 */
const SCRIPT = `#!/bin/sh
set -e
case "$1" in
  deploy)
    head -c "$((TF_VAR_mib * 1048576))" /dev/urandom > /state/blob
    sha256sum /state/blob > /state/blob.sha256
    printf '{"sha":"%s","size":%s}\\n' "$(cut -d' ' -f1 /state/blob.sha256)" "$(wc -c < /state/blob)" > /state/outputs.json
    echo "wrote $TF_VAR_mib MiB"
    sleep 3
    ;;
  verify)
    sha256sum -c /state/blob.sha256
    printf '{"sha":"%s","size":%s}\\n' "$(sha256sum /state/blob | cut -d' ' -f1)" "$(wc -c < /state/blob)" > /state/outputs.json
    ;;
esac
`;

type Run = RunBody & { phase: string | null };

/** The sha256 and size of a download, and the sha256 of the tar entry `name` inside it. */
async function digestArchive(res: Response, name: string): Promise<{ sha256: string; size: number; entrySha256: string | undefined }> {
  const whole = createHash('sha256');
  let size = 0;
  let entrySha256: string | undefined;
  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    const h = createHash('sha256');
    stream.on('data', (d: unknown) => {
      h.update(d as Buffer);
    });
    stream.on('end', () => {
      if (header.name === name || header.name === `./${name}`) entrySha256 = h.digest('hex');
      next();
    });
  });
  const source = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  source.on('data', (d: Buffer) => {
    whole.update(d);
    size += d.length;
  });
  await pipeline(source, zlib.createGunzip(), extract);
  return { sha256: whole.digest('hex'), size, entrySha256 };
}

for (const target of ['docker', 'kubernetes'] as const) {
  const skip = target === 'kubernetes' ? noCluster : false;
  describe(`a slow state store on ${target === 'docker' ? 'a Docker node' : 'Kubernetes (one Job per run)'}`, { skip }, () => {
    let sys: TestSystem;
    let proxy: SlowProxy;
    let template: string;

    before(async () => {
      const upstream = new URL(env('GG_TEST_DATABASE_URL'));
      proxy = await startSlowProxy({ host: upstream.hostname, port: Number(upstream.port || 5432) }, Infinity);
      const dbEnv = { DATABASE_URL: throughProxy(env('GG_TEST_DATABASE_URL'), proxy) };
      sys = await startTestSystem(target === 'kubernetes' ? { nodeWorker: false, env: { ...(await kubernetesEnv()), ...dbEnv } } : { env: dbEnv });
      const image = await pushToRegistry(await scriptImage(sys.docker, SCRIPT));
      template = await registerBlobTemplate(sys.call, 'slow-state', image);
    });
    after(async () => {
      proxy?.setRate(Infinity);
      await sys?.stop();
      await proxy?.close();
    });

    async function start(id: string, action: string): Promise<string> {
      const res = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      return res.body.id;
    }
    const phaseOf = async (runId: string) => (await sys.call<Run>('GET', `/v1/runs/${runId}`)).body;

    /** Every executeRun of the deployment's workflow: the task queue it ran on and the attempt that ended it. */
    async function executeRuns(id: string): Promise<{ taskQueue: string; attempt: number }[]> {
      const history = await sys.client.workflow.getHandle(`deployment-${id}`).fetchHistory();
      const scheduled = new Map<string, { name: string; taskQueue: string }>();
      const found: { taskQueue: string; attempt: number }[] = [];
      for (const e of history.events ?? []) {
        const s = e.activityTaskScheduledEventAttributes;
        if (s) scheduled.set(String(e.eventId), { name: s.activityType?.name ?? '', taskQueue: s.taskQueue?.name ?? '' });
        const started = e.activityTaskStartedEventAttributes;
        const of = started && scheduled.get(String(started.scheduledEventId));
        // Temporal writes the started event of an activity once, when it closes, with the attempt that closed it.
        if (of?.name === 'executeRun') found.push({ taskQueue: of.taskQueue, attempt: started!.attempt ?? 0 });
      }
      return found;
    }

    it('stores a /state that takes several heartbeat timeouts in one attempt, through a cancel, and restores it whole', { timeout: 600_000 }, async () => {
      const created = await sys.call<{ id: string }>('POST', '/v1/deployments', {
        template: { name: template },
        parameters: { mib: BLOB_MIB },
        target: target === 'docker' ? { kind: 'node', node: sys.nodeId } : { kind: 'cluster' },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const id = created.body.id;
      const runId = await start(id, 'deploy');

      // Fast while the run is set up; slow from before the template ends, so the whole archive is slow.
      await eventually('the run to be executing', async () => ((await phaseOf(runId)).phase === 'executing' ? true : undefined), 180_000);
      proxy.setRate(SLOW_BYTES_PER_SECOND);
      await eventually('the run to be archiving', async () => {
        const r = await phaseOf(runId);
        assert.ok(!['succeeded', 'failed', 'cancelled'].includes(r.status), `the run ended before it was seen archiving: ${JSON.stringify(r)}`);
        return r.phase === 'archiving' ? true : undefined;
      }, 120_000);
      const archivingAt = Date.now();
      assert.equal((await sys.call('POST', `/v1/runs/${runId}/cancel`)).status, 202);

      const run = (await waitForRun(sys.call, runId, 400_000)) as Run;
      const archiveSeconds = (Date.now() - archivingAt) / 1000;
      proxy.setRate(Infinity);
      console.log(`# state-slow-storage ${target}: ${BLOB_MIB} MiB stored at ${SLOW_BYTES_PER_SECOND / 1024} KiB/s in ${archiveSeconds.toFixed(1)} s`);

      assert.equal(run.status, 'succeeded', `the template had ended: its outcome stays (${JSON.stringify({ status: run.status, reason: run.reason, message: run.message, warnings: run.warnings })})`);
      assert.ok(
        run.warnings.some((w) => /^a cancel (arrived|came) while \/state was being archived, after the template had ended; the archive was completed$/.test(w)),
        `a warning tells of the late cancel: ${JSON.stringify(run.warnings)}`,
      );
      assert.ok(run.stateVersion, 'archived');
      const outputs = run.outputs as { sha: string; size: number };
      assert.equal(outputs.size, BLOB_MIB * 1024 * 1024);

      const attempts = await executeRuns(id);
      const queue = target === 'docker' ? `node-${sys.nodeId}` : sys.config.temporal.taskQueue;
      assert.deepEqual(attempts, [{ taskQueue: queue, attempt: 1 }], 'executeRun ran one attempt: no heartbeat timeout, no retry');
      // The proxy did slow the archive: storing it outlasted the heartbeat timeout several times over.
      assert.ok(archiveSeconds * 1000 > 2 * HEARTBEAT_TIMEOUT_MS, `the archive took only ${archiveSeconds} s: the store was not slow`);

      // The version is what was stored, and holds the blob the template wrote.
      const versions = await sys.call<{ items: { version: number; sha256: string; sizeBytes: number }[] }>('GET', `/v1/deployments/${id}/state-versions`);
      const version = versions.body.items.find((v) => v.version === run.stateVersion);
      assert.ok(version, JSON.stringify(versions.body));
      assert.ok(version.sizeBytes > BLOB_MIB * 1024 * 1024, `random bytes do not compress: ${version.sizeBytes} bytes`);
      const res = await fetch(`${sys.api.url}/v1/deployments/${id}/state-versions/${run.stateVersion}/archive`, {
        headers: { authorization: `Bearer ${sys.tokens.admin}` },
      });
      assert.equal(res.status, 200);
      const downloaded = await digestArchive(res, 'blob');
      assert.deepEqual({ sha256: downloaded.sha256, size: downloaded.size }, { sha256: version.sha256, size: version.sizeBytes });
      assert.equal(downloaded.entrySha256, outputs.sha, 'the archive holds the blob the template wrote');

      // The next run, at full speed, restores it whole.
      const verify = await waitForRun(sys.call, await start(id, 'verify'), 180_000);
      assert.equal(verify.status, 'succeeded', verify.message ?? '');
      assert.equal(verify.stateVersionFrom, run.stateVersion);
      assert.deepEqual(verify.outputs, outputs, 'the restored blob is the one written');
    });
  });
}
