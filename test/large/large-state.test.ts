/**
 * A /state of several GiB round-trips on both targets: 3 GiB of random bytes (incompressible, so gzip,
 * encryption and Postgres all carry 3 GiB) written by one run, archived, restored for the next run and
 * found whole there; then the deployment is purged and its space is reusable at once. Each phase's time
 * and the database's size are printed (`# large-state ...` lines).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { registerBlobTemplate, type RunBody } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { pushToRegistry } from '../support/registry.js';
import { eventually, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

/** GG_TEST_LARGE_STATE_GIB: another size, to try a change quickly. */
const GIB = Number(process.env.GG_TEST_LARGE_STATE_GIB ?? 3);
const BYTES = GIB * 1024 * 1024 * 1024;
const MIB = 1024 * 1024;
/**
 * The node worker and the API run in this process: what they hold while streaming the state must not grow
 * with its size (a 3 GiB state on a node with less memory than that must still archive).
 */
const MEMORY_BOUND = 512 * MIB;

/**
 * deploy: $TF_VAR_mib MiB of random bytes into /state/big, its sha256 beside it and in the outputs.
 * verify: the restored file checked against the recorded sha256 (exit 1 on a mismatch), then removed, so
 * this run's own archive is small.
 */
const SCRIPT = `#!/bin/sh
set -e
case "$1" in
  deploy)
    head -c "$((TF_VAR_mib * 1048576))" /dev/urandom > /state/big
    sha256sum /state/big > /state/big.sha256
    printf '{"sha":"%s","size":%s}\\n' "$(cut -d' ' -f1 /state/big.sha256)" "$(stat -c %s /state/big)" > /state/outputs.json
    ;;
  verify)
    sha=$(sha256sum /state/big | cut -d' ' -f1)
    printf '{"sha":"%s","size":%s}\\n' "$sha" "$(stat -c %s /state/big)" > /state/outputs.json
    rm /state/big
    if [ "$sha" != "$(cut -d' ' -f1 /state/big.sha256)" ]; then echo "restored /state/big: sha256 $sha is not the one recorded" >&2; exit 1; fi
    ;;
esac
`;

type Run = RunBody & { phase?: string | null };
const ENDED = ['succeeded', 'failed', 'cancelled'];
const seconds = (ms: number) => (ms / 1000).toFixed(1);
const gib = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(2)} GiB`;

for (const target of ['docker', 'kubernetes'] as const) {
  const skip = target === 'kubernetes' ? noCluster : false;
  const say = (line: string) => console.log(`# large-state ${target}: ${line}`);

  describe(`a ${GIB} GiB /state on ${target === 'docker' ? 'a Docker node' : 'Kubernetes (one Job per run)'}`, { skip }, () => {
    let sys: TestSystem;
    let template: string;

    before(async () => {
      sys = await startTestSystem(target === 'kubernetes' ? { nodeWorker: false, env: await kubernetesEnv() } : {});
      const image = await pushToRegistry(await scriptImage(sys.docker, SCRIPT));
      template = await registerBlobTemplate(sys.call, 'large-state', image);
      await sys.db.query('CREATE EXTENSION IF NOT EXISTS pg_freespacemap');
    });
    after(async () => {
      await sys?.stop();
    });

    /** Runs an action to its end, timing each phase as the API shows it (polled every 250 ms). */
    async function timedRun(id: string, action: string): Promise<{ run: Run; phases: Map<string, number>; peakBuffers: number }> {
      const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${id}/runs`, { action });
      assert.equal(started.status, 202, JSON.stringify(started.body));
      const phases = new Map<string, number>();
      let at = Date.now();
      let current = 'pending';
      let peakBuffers = 0;
      const run = await eventually(`the ${action} run to end`, async () => {
        peakBuffers = Math.max(peakBuffers, process.memoryUsage().arrayBuffers);
        const r = (await sys.call<Run>('GET', `/v1/runs/${started.body.id}`)).body;
        const phase = ENDED.includes(r.status) ? 'ended' : (r.phase ?? r.status);
        if (phase !== current) {
          phases.set(current, (phases.get(current) ?? 0) + Date.now() - at);
          at = Date.now();
          current = phase;
        }
        if (ENDED.includes(r.status)) return r;
        await new Promise((resolve) => setTimeout(resolve, 250));
        return undefined;
      }, 1_200_000);
      return { run, phases, peakBuffers };
    }

    /** The space state chunks take (their TOAST table holds the data), and how much of it is free for reuse. */
    async function chunkSpace(): Promise<{ database: number; chunks: number; free: number }> {
      const { rows } = await sys.db.query<{ database: string; chunks: string; free: string }>(
        `SELECT pg_database_size(current_database()) AS database, pg_total_relation_size('state_chunks') AS chunks,
                (SELECT coalesce(sum(avail), 0) FROM pg_freespace('state_chunks'))
                  + (SELECT coalesce(sum(avail), 0) FROM pg_freespace((SELECT reltoastrelid FROM pg_class WHERE oid = 'state_chunks'::regclass))) AS free`,
      );
      return { database: Number(rows[0]!.database), chunks: Number(rows[0]!.chunks), free: Number(rows[0]!.free) };
    }

    it(`archives ${GIB} GiB of random bytes, restores them whole for the next run, and gives the space back on purge`, { timeout: 2_400_000 }, async () => {
      const before_ = await chunkSpace();
      say(`database ${gib(before_.database)}, state chunks ${gib(before_.chunks)} before`);
      const created = await sys.call<{ id: string }>('POST', '/v1/deployments', {
        template: { name: template },
        parameters: { mib: BYTES / MIB },
        target: target === 'docker' ? { kind: 'node', node: sys.nodeId } : { kind: 'cluster' },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const id = created.body.id;

      const deploy = await timedRun(id, 'deploy');
      assert.equal(deploy.run.status, 'succeeded', JSON.stringify(deploy.run));
      const written = deploy.run.outputs as { sha: string; size: number };
      assert.equal(written.size, BYTES);
      const versions = await sys.call<{ items: { version: number; sha256: string; sizeBytes: number }[] }>('GET', `/v1/deployments/${id}/state-versions`);
      const version = versions.body.items.find((v) => v.version === deploy.run.stateVersion);
      assert.ok(version, JSON.stringify(versions.body));
      assert.ok(version.sizeBytes > BYTES, `random bytes do not compress: the archive is ${version.sizeBytes} bytes`);
      const archived = deploy.phases.get('archiving') ?? 0;
      say(`deploy: start ${seconds((deploy.phases.get('pending') ?? 0) + (deploy.phases.get('preparing') ?? 0))} s, write + sha256 ${GIB} GiB ${seconds(deploy.phases.get('executing') ?? 0)} s`);
      say(`archive ${GIB} GiB in ${seconds(archived)} s (${(version.sizeBytes / MIB / (archived / 1000)).toFixed(0)} MiB/s); buffers in this process peaked at ${(deploy.peakBuffers / MIB).toFixed(0)} MiB`);
      assert.ok(deploy.peakBuffers < MEMORY_BOUND, `archiving held ${(deploy.peakBuffers / MIB).toFixed(0)} MiB of buffers: the archive is not streamed`);

      const stored = await chunkSpace();
      say(`database ${gib(stored.database)}, state chunks ${gib(stored.chunks)} with the version stored`);
      const held = await sys.db.query<{ bytes: string }>('SELECT coalesce(sum(octet_length(data)), 0) AS bytes FROM state_chunks WHERE deployment_id = $1', [id]);
      assert.ok(Number(held.rows[0]!.bytes) >= version.sizeBytes, `the chunks hold the whole archive, encrypted: ${held.rows[0]!.bytes} bytes`);

      const verify = await timedRun(id, 'verify');
      assert.equal(verify.run.status, 'succeeded', JSON.stringify(verify.run));
      assert.equal(verify.run.stateVersionFrom, deploy.run.stateVersion);
      assert.deepEqual(verify.run.outputs, written, 'the restored file has the size and sha256 written');
      const restored = verify.phases.get('restoring') ?? 0;
      say(`restore ${GIB} GiB in ${seconds(restored)} s (${(version.sizeBytes / MIB / (restored / 1000)).toFixed(0)} MiB/s), sha256 ${seconds(verify.phases.get('executing') ?? 0)} s, archive after ${seconds(verify.phases.get('archiving') ?? 0)} s; buffers peaked at ${(verify.peakBuffers / MIB).toFixed(0)} MiB`);
      assert.ok(restored > 0, 'the restore was seen');
      assert.ok(verify.peakBuffers < MEMORY_BOUND, `restoring held ${(verify.peakBuffers / MIB).toFixed(0)} MiB of buffers: the archive is not streamed`);

      const purgeAt = Date.now();
      const purged = await sys.call('DELETE', `/v1/deployments/${id}`);
      assert.equal(purged.status, 204, JSON.stringify(purged.body));
      const after_ = await chunkSpace();
      say(`purge in ${seconds(Date.now() - purgeAt)} s; database ${gib(after_.database)}, state chunks ${gib(after_.chunks)} of which ${gib(after_.free)} free for reuse`);
      const { rows } = await sys.db.query<{ n: number }>('SELECT count(*)::int AS n FROM state_chunks WHERE deployment_id = $1', [id]);
      assert.equal(rows[0]!.n, 0, 'the chunks went with the deployment');
      // Given back to the system, or free for the next state to reuse, by the time the purge has answered.
      const kept = after_.chunks - after_.free - (before_.chunks - before_.free);
      assert.ok(kept < 256 * MIB, `${gib(kept)} of the purged state's space is neither given back nor reusable`);
    });
  });
}
