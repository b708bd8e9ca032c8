/**
 * `npm test`: starts what the tests need, runs every test file with Node's test runner against it,
 * then checks that nothing was left behind. Services get ephemeral ports and a fresh database, so a
 * running dev stack is never touched.
 *
 *   DATABASE_URL   use this Postgres server (a fresh database is made on it); otherwise an embedded one
 *   DOCKER_HOST    the Docker engine (default socket otherwise)
 *   GG_TEST_KUBERNETES=0   skip the Kubernetes test cluster (quick local runs; its tests are skipped then)
 *   npm test -- test/unit   runs only the files under the given paths
 *   npm run test:large      the multi-GiB state tests (test/large), left out of a run that names no path
 */
import { spawn } from 'node:child_process';
import { readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MANAGED_LABEL, WORKDIR_LABEL } from '../activities/execution/adapter.js';
import { K8S_MANAGED_LABEL } from '../activities/execution/kubernetes/job-spec.js';
import { POD_RUNNER_DIR, goEnv } from '../infra/dev/images.js';
import { say } from '../infra/dev/progress.js';
import { startTestServices, type TestServices } from '../infra/dev/test-services.js';
import { SECRETS_ROOT } from './support/system.js';

async function findTestFiles(dir: string): Promise<string[]> {
  if (dir.endsWith('.test.ts')) return [dir];
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.test.ts'))
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}

/** The pod-runner's own tests (Go, infra/images/pod-runner): a few seconds, before anything is started. */
async function podRunnerTests(): Promise<boolean> {
  const started = Date.now();
  say('pod-runner (Go): go vet + go test ...');
  const go = (args: string[]) =>
    new Promise<boolean>((resolve) => {
      const child = spawn('go', args, { cwd: POD_RUNNER_DIR, env: goEnv(), stdio: ['ignore', 'inherit', 'inherit'] });
      child.on('error', (err) => {
        say(`cannot run 'go' (${err.message}): install Go 1.24+ (https://go.dev/dl) or put it on PATH`);
        resolve(false);
      });
      child.on('exit', (code) => resolve(code === 0));
    });
  const ok = (await go(['vet', './...'])) && (await go(['test', './...']));
  say(`pod-runner (Go): ${ok ? 'ok' : 'FAILED'} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  return ok;
}

async function main(): Promise<number> {
  const selected = process.argv.slice(2);
  // test/large (multi-GiB states, minutes each) runs as its own step (`npm run test:large`), only when named.
  const files = selected.length
    ? (await Promise.all(selected.map((p) => findTestFiles(p)))).flat()
    : (await findTestFiles('test')).filter((f) => !f.startsWith(`test${path.sep}large${path.sep}`));
  if (files.length === 0) throw new Error(`no test files under ${selected.join(' ')}`);
  if (!(await podRunnerTests())) {
    console.log('the pod-runner\'s Go tests failed: nothing else was run');
    return 1;
  }
  let services: TestServices | undefined;
  try {
    // A Ctrl-C (or a CI timeout's SIGTERM) still stops the services: the cluster's pods and mounts included.
    // One Ctrl-C arrives several times (npm and tsx pass it on too): the first stops the services; another,
    // seconds later, is someone who does not want to wait: quit.
    let firstSignal: number | undefined;
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.on(signal, () => {
        if (firstSignal !== undefined) {
          if (Date.now() - firstSignal > 2000) process.exit(130);
          return;
        }
        firstSignal = Date.now();
        say(`${signal}: stopping the test services`);
        void (services?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
      });
    }
    services = await startTestServices('test', { kubernetes: process.env.GG_TEST_KUBERNETES !== '0' });
    const { docker, scratch, env } = services;
    const tapFile = path.join(scratch, 'results.tap');
    say(`running ${files.length} test files`);
    let hung = false;
    const exitCode = await new Promise<number>((resolve) => {
      const child = spawn(
        process.execPath,
        [
          '--import', 'tsx',
          '--test',
          '--test-reporter=spec', '--test-reporter-destination=stdout',
          '--test-reporter=tap', `--test-reporter-destination=${tapFile}`,
          `--test-concurrency=${Math.max(2, os.availableParallelism())}`,
          '--test-timeout=300000',
          // No --test-force-exit: with several files at once it drops the last verdicts of a file, failures
          // included, and still exits 0 (nodejs/node#64833). A file must end by itself: each closes what it opens.
          ...files,
        ],
        {
          stdio: 'inherit',
          env: { ...process.env, ...env },
        },
      );
      // Without --test-force-exit a file that keeps its process alive would hang the run: say so and stop it.
      const limitMinutes = Number(process.env.GG_TEST_MAX_MINUTES ?? 30);
      const watchdog = setTimeout(() => {
        hung = true;
        say(`FAIL: the tests did not end within ${limitMinutes} min (GG_TEST_MAX_MINUTES): a test file keeps its process alive or hangs; stopping them`);
        child.kill('SIGTERM');
      }, limitMinutes * 60_000);
      child.on('exit', (code, signal) => {
        clearTimeout(watchdog);
        resolve(code ?? (signal ? 1 : 0));
      });
    });

    // Every test cleans up after itself; a container left behind is a bug in the product or in a test.
    // Only this run's: every test's node keeps its run folders under the scratch folder (another `npm test`
    // running beside this one has its own).
    const leftovers = (await docker.listContainers({ all: true, filters: { label: [MANAGED_LABEL] } })).filter((c) =>
      c.Labels[WORKDIR_LABEL]?.startsWith(`${scratch}/`),
    );
    for (const c of leftovers) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
    const tap = await readFile(tapFile, 'utf8').catch(() => '');
    const count = (name: string) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tap)?.[1] ?? 0);
    let passed = count('pass');
    let failed = count('fail') + count('cancelled') + (hung ? 1 : 0);
    if (leftovers.length > 0) {
      failed += 1;
      say(`FAIL: ${leftovers.length} container(s) left behind: ${leftovers.map((c) => c.Names.join(',')).join(' ')}`);
    } else {
      passed += 1;
      say('ok: no container left behind');
    }
    // Likewise no Job, pod or Secret of a run in the cluster (a pod goes a moment after its Job: wait a little).
    const cluster = services.kubernetes;
    if (cluster) {
      const objects = () =>
        cluster.kubectl(['get', 'jobs,pods,secrets', '-n', cluster.namespace, '-l', K8S_MANAGED_LABEL + '=true', '-o', 'name']).then((o) => o.trim());
      let left = await objects();
      for (let i = 0; left && i < 30; i++) {
        await new Promise((r) => setTimeout(r, 1_000));
        left = await objects();
      }
      if (left) {
        failed += 1;
        say(`FAIL: left behind in the cluster: ${left.split('\n').join(' ')}`);
      } else {
        passed += 1;
        say('ok: no Job, pod or Secret left behind in the cluster');
      }
    }
    await rm(SECRETS_ROOT, { recursive: true, force: true });
    await services.stop();
    console.log(`${passed} passed, ${failed} failed`);
    return exitCode !== 0 || failed > 0 ? 1 : 0;
  } catch (err) {
    say(`test set-up failed: ${err instanceof Error ? err.message : String(err)}`);
    await services?.stop();
    return 1;
  }
}

process.exitCode = await main();
