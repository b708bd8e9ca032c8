import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ApplicationFailure } from '@temporalio/common';
import Docker from 'dockerode';
import { RUN_LABEL, containerName, type ExecutionContext } from '../../activities/execution/adapter.js';
import { DockerExecutor } from '../../activities/execution/docker.js';
import type { LogSink } from '../../activities/execution/logs.js';
import type { StateStore } from '../../activities/execution/adapter.js';
import type { RunSpec } from '../../core/domain.js';
import { newId } from '../../core/ids.js';
import { scriptImage } from '../support/images.js';
import { env, eventually, images, SECRETS_ROOT } from '../support/system.js';

/** Keeps a run's log in memory, as the adapter hands it over. */
class MemorySink implements LogSink {
  readonly chunks: Parameters<LogSink['append']>[0][] = [];
  storedLengths(runId: string) {
    const lengths: Record<string, number> = {};
    for (const c of this.chunks) if (c.runId === runId) lengths[c.stream] = Math.max(lengths[c.stream] ?? 0, c.offset + c.data.length);
    return Promise.resolve(lengths);
  }
  append(chunk: Parameters<LogSink['append']>[0]) {
    if (!this.chunks.some((c) => c.runId === chunk.runId && c.stream === chunk.stream && c.offset === chunk.offset)) this.chunks.push(chunk);
    return Promise.resolve();
  }
  text(runId: string, stream: 'stdout' | 'stderr') {
    return Buffer.concat(this.chunks.filter((c) => c.runId === runId && c.stream === stream).map((c) => c.data)).toString();
  }
}
const memorySink = new MemorySink();

/** Keeps state archives in memory, one per run, as the adapter writes them. */
class MemoryStateStore implements StateStore {
  readonly versions = new Map<string, { runId: string; data: Buffer }[]>();
  async write(deploymentId: string, runId: string, archive: AsyncIterable<Buffer>) {
    const list = this.versions.get(deploymentId) ?? [];
    this.versions.set(deploymentId, list);
    const parts: Buffer[] = [];
    for await (const p of archive) parts.push(p);
    const found = list.findIndex((v) => v.runId === runId);
    if (found === -1) list.push({ runId, data: Buffer.concat(parts) });
    return { version: (found === -1 ? list.length : found + 1), sha256: '', sizeBytes: 0 };
  }
  async *read(deploymentId: string, version: number) {
    yield await Promise.resolve(this.versions.get(deploymentId)![version - 1]!.data);
  }
}
const memoryState = new MemoryStateStore();

/** The Docker adapter alone, against the real engine: adoption, timeouts, cancel and lost containers. */
describe('DockerExecutor', () => {
  const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
  const executor = new DockerExecutor(docker, path.join(env('GG_TEST_SCRATCH'), `executor-${process.pid}`), path.join(SECRETS_ROOT, `executor-${process.pid}`), memorySink, memoryState);
  const runIds: string[] = [];
  let trapImage: string;
  let stubbornImage: string;

  const spec = (overrides: Partial<RunSpec> = {}): RunSpec => {
    const runId = newId('run');
    runIds.push(runId);
    return {
      runId,
      deploymentId: newId('dep'),
      action: 'deploy',
      image: images.example,
      parameters: { message: 'hi' },
      env: { GLIDERGUN_CONTRACT_VERSION: '1', GLIDERGUN_ACTION: 'deploy', GLIDERGUN_DEPLOYMENT_ID: 'dep-x', GLIDERGUN_RUN_ID: runId },
      timeoutSeconds: 60,
      stopGraceSeconds: 2,
      ...overrides,
    };
  };
  const context = (signal = new AbortController().signal): ExecutionContext => ({ signal, heartbeat: () => undefined, log: () => undefined });
  const containersOf = (runId: string) => docker.listContainers({ all: true, filters: { label: [`${RUN_LABEL}=${runId}`] } });
  const running = (runId: string) =>
    eventually(`container of ${runId} running`, async () => {
      const [c] = await containersOf(runId);
      return c?.State === 'running' ? c : undefined;
    });

  before(async () => {
    // A template whose main process and a background child both trap SIGTERM and record it.
    trapImage = await scriptImage(
      docker,
      `#!/bin/sh
(trap 'echo child >> /state/signals; exit 0' TERM; while true; do sleep 0.1; done) &
trap 'echo main >> /state/signals; wait; exit 143' TERM
echo started > /state/started
while true; do sleep 0.1; done
`,
    );
    // A template that ignores SIGTERM (and so do its children, which inherit the disposition).
    stubbornImage = await scriptImage(docker, `#!/bin/sh\ntrap '' TERM\necho started > /state/started\nwhile true; do sleep 0.1; done\n`);
  });

  after(async () => {
    for (const runId of runIds) await executor.cleanup(runId);
  });

  it('adopts the container of an earlier attempt instead of starting a twin', async () => {
    const s = spec({ env: { ...spec().env, TF_VAR_sleep_seconds: '2' } });
    const first = executor.execute(s, {}, context());
    await running(s.runId);
    const second = executor.execute(s, {}, context());
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.status, 'succeeded');
    assert.deepEqual(b, a);
    assert.equal((await containersOf(s.runId)).length, 1);
    // The template ran once: its own run counter in /state says so.
    assert.equal(a.outputs?.runCount, 1);
    // A third attempt after the end adopts the exited container and reports the same result without rerunning.
    assert.deepEqual(await executor.execute(s, {}, context()), a);
    // Three attempts read the container's log; each byte was stored once.
    const stdout = memorySink.text(s.runId, 'stdout');
    assert.equal(stdout.split('example template: action=deploy').length, 2, stdout);
  });

  it('on cancel, sends SIGTERM to the whole process tree and reports cancelled', async () => {
    // A long grace, so that "before the grace ran out" is an ordering a loaded machine cannot blur.
    const graceSeconds = 30;
    const s = spec({ image: trapImage, stopGraceSeconds: graceSeconds });
    const abort = new AbortController();
    const outcome = executor.execute(s, {}, context(abort.signal));
    await running(s.runId);
    await eventually('the template to start', () => Promise.resolve(existsSync(path.join(executor.runDir(s.runId), 'state', 'started')) ? true : undefined));
    const t0 = Date.now();
    abort.abort();
    const result = await outcome;
    const elapsed = Date.now() - t0;
    assert.equal(result.status, 'cancelled');
    // The main process's trap ends it with 143 once its child has gone; a SIGKILL after the grace would be 137.
    assert.equal(result.exitCode, 143, 'the tree ended on its SIGTERM, not killed');
    assert.ok(elapsed < graceSeconds * 1000, `stopped ${elapsed} ms after the cancel: before the ${graceSeconds} s grace ran out`);
    const signals = (await readFile(path.join(executor.runDir(s.runId), 'state', 'signals'), 'utf8')).split('\n').filter(Boolean).sort();
    assert.deepEqual(signals, ['child', 'main']);
  });

  // The test's own timeout ends a run whose timeout or SIGKILL is never enforced, in a minute rather than five.
  it('ends a run that exceeds its timeout as failed/timeout, killing a template that ignores SIGTERM after the grace', { timeout: 60_000 }, async () => {
    const timeoutSeconds = 1;
    const graceSeconds = 3;
    const s = spec({ image: stubbornImage, timeoutSeconds, stopGraceSeconds: graceSeconds });
    const result = await executor.execute(s, {}, context());
    assert.equal(result.status, 'failed');
    assert.equal(result.reason, 'timeout');
    assert.equal(result.exitCode, 137, 'killed by SIGKILL');
    // The container's life by the engine's own clock (the deadline counts from its start): never shorter than
    // the timeout plus the grace; a loaded machine makes it only longer, so the upper bound is generous (20 s
    // over), and still well below what a grace taken ten times over, or a kill that never comes, would give.
    const [c] = await containersOf(s.runId);
    assert.ok(c, 'the container is kept until cleanup');
    assert.equal(c.State, 'exited');
    const state = (await docker.getContainer(c.Id).inspect()).State;
    const life = Date.parse(state.FinishedAt) - Date.parse(state.StartedAt);
    const least = (timeoutSeconds + graceSeconds) * 1000;
    assert.ok(life >= least - 5, `the container lived ${life} ms: at least the timeout plus the grace (${least} ms)`);
    assert.ok(life < least + 20_000, `the container lived ${life} ms: the timeout plus the grace (${least} ms), with 20 s for a loaded machine`);
  });

  it('reports a container that vanished after it started, rather than starting the run again', async () => {
    const s = spec({ image: stubbornImage });
    const first = executor.execute(s, {}, context());
    await running(s.runId);
    await docker.getContainer(containerName(s.runId)).remove({ force: true });
    // The attempt that was watching sees the container die or disappear; either way it ends.
    const seen = await first.then((o) => o.status, () => 'rejected');
    assert.ok(['failed', 'rejected'].includes(seen), seen);
    // A later attempt (a retry after a worker crash) must not start the run a second time.
    await assert.rejects(executor.execute(s, {}, context()), (err: unknown) => {
      assert.ok(err instanceof ApplicationFailure);
      assert.equal(err.type, 'container-vanished');
      assert.equal(err.nonRetryable, true);
      return true;
    });
    assert.equal((await containersOf(s.runId)).length, 0);
  });

  it('stops restoring at a cancel: the template does not start and the previous version stays current', async () => {
    const first = spec();
    const done = await executor.execute(first, {}, context());
    assert.equal(done.status, 'succeeded');
    const abort = new AbortController();
    // The cancel lands half-way through the restore (a store read in two pieces, the cancel between them).
    const halting: StateStore = {
      write: (deploymentId, runId, archive) => memoryState.write(deploymentId, runId, archive),
      async *read(deploymentId, version) {
        let whole = Buffer.alloc(0);
        for await (const piece of memoryState.read(deploymentId, version)) whole = Buffer.concat([whole, piece]);
        yield whole.subarray(0, whole.length >> 1);
        abort.abort();
        yield whole.subarray(whole.length >> 1);
      },
    };
    const halted = new DockerExecutor(docker, path.join(env('GG_TEST_SCRATCH'), `executor-halt-${process.pid}`), path.join(SECRETS_ROOT, `halt-${process.pid}`), memorySink, halting);
    const s = spec({ deploymentId: first.deploymentId, restoreStateVersion: done.stateVersion });
    try {
      const result = await halted.execute(s, {}, context(abort.signal));
      assert.equal(result.status, 'cancelled');
      assert.match(result.message ?? '', /while \/state was being restored/);
      assert.equal(result.stateVersion, undefined, 'a half-restored /state is not archived');
      assert.equal(memoryState.versions.get(first.deploymentId)?.length, 1, 'no version was added');
      assert.equal((await containersOf(s.runId)).length, 0, 'no container was created');
    } finally {
      await halted.cleanup(s.runId);
    }
  });

  it('finishes archiving when a cancel arrives during it, reporting what the template did', async () => {
    const abort = new AbortController();
    const cancellingStore: StateStore = {
      write: (deploymentId, runId, archive) => {
        abort.abort(); // the cancel lands while /state is being archived
        return memoryState.write(deploymentId, runId, archive);
      },
      read: (deploymentId, version) => memoryState.read(deploymentId, version),
    };
    const late = new DockerExecutor(docker, path.join(env('GG_TEST_SCRATCH'), `executor-late-${process.pid}`), path.join(SECRETS_ROOT, `late-${process.pid}`), memorySink, cancellingStore);
    const s = spec();
    try {
      const result = await late.execute(s, {}, context(abort.signal));
      assert.equal(abort.signal.aborted, true);
      assert.equal(result.status, 'succeeded', 'the template had already finished: the cancel came too late to change that');
      assert.equal(result.stateVersion, 1, 'the archive was completed');
    } finally {
      await late.cleanup(s.runId);
    }
  });

  it('cleans up the container and the run folder, and cleaning twice is harmless', async () => {
    const s = spec();
    await executor.execute(s, {}, context());
    await executor.cleanup(s.runId);
    await executor.cleanup(s.runId);
    assert.equal((await containersOf(s.runId)).length, 0);
    assert.equal(existsSync(executor.runDir(s.runId)), false);
  });
});
