/**
 * `npm test`: starts what the tests need, runs every test file with Node's test runner against it,
 * then checks that nothing was left behind. Services get ephemeral ports and a fresh database, so a
 * running dev stack is never touched.
 *
 *   DATABASE_URL   use this Postgres server (a fresh database is made on it); otherwise an embedded one
 *   DOCKER_HOST    the Docker engine (default socket otherwise)
 *   GG_TEST_KUBERNETES=0   skip the Kubernetes test cluster (quick local runs; its tests are skipped then)
 *   GG_TEST_GO=0   skip the Go modules' tests (pod-runner, gateway: quick local runs of TypeScript files; the binaries are still built)
 *   npm test -- test/unit   runs only the files under the given paths
 *   npm run test:large      the multi-GiB state tests (test/large), left out of a run that names no path
 */
import { spawn } from 'node:child_process';
import { readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MANAGED_LABEL, WORKDIR_LABEL } from '../activities/execution/adapter.js';
import { K8S_MANAGED_LABEL } from '../activities/execution/kubernetes/job-spec.js';
import { GATEWAY_DIR } from '../infra/dev/gateway.js';
import { POD_RUNNER_DIR, goEnv } from '../infra/dev/images.js';
import { say } from '../infra/dev/progress.js';
import { startTestServices, type TestServices } from '../infra/dev/test-services.js';

async function findTestFiles(dir: string): Promise<string[]> {
  if (dir.endsWith('.test.ts')) return [dir];
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.test.ts'))
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}

/** What a test run counted. */
interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

/** The Go modules of this repository, each tested with `go vet` and `go test` before anything is started. */
const GO_MODULES = [
  { name: 'pod-runner', dir: POD_RUNNER_DIR },
  { name: 'gateway', dir: GATEWAY_DIR },
];

/**
 * One Go module's own tests: a few seconds, before anything is started. `go test -json`, so each test is
 * counted (subtests within their test); a failing test's output is printed.
 */
async function goModuleTests(name: string, dir: string): Promise<{ ok: boolean; counts: Counts }> {
  const started = Date.now();
  const counts: Counts = { passed: 0, failed: 0, skipped: 0 };
  say(`${name} (Go): go vet + go test ...`);
  const go = (args: string[], onLine?: (line: string) => void) =>
    new Promise<boolean>((resolve) => {
      const child = spawn('go', args, { cwd: dir, env: goEnv(), stdio: ['ignore', onLine ? 'pipe' : 'inherit', 'inherit'] });
      child.on('error', (err) => {
        say(`cannot run 'go' (${err.message}): install Go 1.26+ (https://go.dev/dl; the gateway's grpc needs 1.26) or put it on PATH`);
        resolve(false);
      });
      if (onLine && child.stdout) {
        let rest = '';
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
          const lines = (rest + chunk).split('\n');
          rest = lines.pop() ?? '';
          lines.forEach(onLine);
        });
        child.stdout.on('end', () => rest && onLine(rest));
      }
      child.on('close', (code) => resolve(code === 0));
    });
  // Output is kept per test and printed when the test fails; a package's own output (a build error, a
  // panic outside a test) when the package fails.
  const output = new Map<string, string[]>();
  const onEvent = (line: string) => {
    let event: { Action?: string; Package?: string; ImportPath?: string; Test?: string; Output?: string };
    try {
      event = JSON.parse(line) as typeof event;
    } catch {
      if (line.trim()) console.log(line);
      return;
    }
    const key = `${event.Package ?? event.ImportPath ?? ''} ${event.Test ?? ''}`;
    if (event.Output !== undefined) output.set(key, [...(output.get(key) ?? []), event.Output]);
    if (event.Action === 'build-output' && event.Output) process.stdout.write(event.Output);
    const topLevel = event.Test !== undefined && !event.Test.includes('/');
    if (event.Action === 'fail' && (topLevel || event.Test === undefined)) process.stdout.write((output.get(key) ?? []).join(''));
    if (!topLevel) return;
    if (event.Action === 'pass') counts.passed += 1;
    else if (event.Action === 'fail') counts.failed += 1;
    else if (event.Action === 'skip') counts.skipped += 1;
  };
  const ok = (await go(['vet', './...'])) && (await go(['test', '-json', './...'], onEvent));
  say(`${name} (Go): ${ok ? 'ok' : 'FAILED'} in ${((Date.now() - started) / 1000).toFixed(1)}s: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`);
  return { ok: ok && counts.failed === 0, counts };
}

/** Every Go module's tests, one after the other (each uses both cores); all are run even when one fails. */
async function goTests(): Promise<{ name: string; ok: boolean; counts: Counts }[]> {
  const results = [];
  for (const m of GO_MODULES) results.push({ name: m.name, ...(await goModuleTests(m.name, m.dir)) });
  return results;
}

/** The files left under the tests' secrets folder: a run's secrets that outlived it. Folders alone are no leak. */
async function leakedSecrets(root: string): Promise<string[]> {
  const entries = await readdir(root, { withFileTypes: true, recursive: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  return entries.filter((e) => !e.isDirectory()).map((e) => path.join(e.parentPath, e.name)).sort();
}

/**
 * The skipped tests and suites in node's TAP output, by reason. A skipped suite's tests are never declared
 * (its body is not run), so node's own `# skipped` count leaves them out: a suite counts as one here.
 */
function skippedInTap(tap: string): { tests: number; suites: number; byReason: Map<string, { tests: number; suites: number }> } {
  const lines = tap.split('\n');
  const result = { tests: 0, suites: 0, byReason: new Map<string, { tests: number; suites: number }>() };
  lines.forEach((line, i) => {
    const m = /^\s*ok \d+ - .*? # SKIP\b ?(.*)$/.exec(line);
    if (!m) return;
    // The YAML block below the line says whether it was a suite or a test.
    let suite = false;
    for (let j = i + 1; j < lines.length && !/^\s*\.\.\.$/.test(lines[j]!); j++) {
      if (/^\s*type: 'suite'$/.test(lines[j]!)) suite = true;
    }
    const reason = m[1]!.trim() || '(no reason given)';
    const entry = result.byReason.get(reason) ?? { tests: 0, suites: 0 };
    result.byReason.set(reason, entry);
    if (suite) {
      result.suites += 1;
      entry.suites += 1;
    } else {
      result.tests += 1;
      entry.tests += 1;
    }
  });
  return result;
}

async function main(): Promise<number> {
  const selected = process.argv.slice(2);
  // test/large (multi-GiB states, minutes each) runs as its own step (`npm run test:large`), only when named.
  const files = selected.length
    ? (await Promise.all(selected.map((p) => findTestFiles(p)))).flat()
    : (await findTestFiles('test')).filter((f) => !f.startsWith(`test${path.sep}large${path.sep}`));
  if (files.length === 0) throw new Error(`no test files under ${selected.join(' ')}`);
  const goResults = process.env.GG_TEST_GO === '0' ? [] : await goTests();
  if (process.env.GG_TEST_GO === '0') say('Go modules (pod-runner, gateway): not run (GG_TEST_GO=0)');
  const goFailed = goResults.filter((r) => !r.ok).map((r) => r.name);
  if (goFailed.length > 0) {
    console.log(`the Go tests of ${goFailed.join(' and ')} failed: nothing else was run`);
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
    // This run's own secrets folder (test/support/system.ts's SECRETS_ROOT), on memory: checked and removed at the end.
    const secretsRoot = `/dev/shm/${path.basename(scratch)}-secrets`;
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
          env: { ...process.env, ...env, GG_TEST_SECRETS_ROOT: secretsRoot },
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
    // The checks after the tests are counted apart from them: `ok` or `failed`, never as tests.
    const checks = { ok: 0, failed: 0 };
    const check = (ok: boolean, message: string) => {
      checks[ok ? 'ok' : 'failed'] += 1;
      say(`${ok ? 'ok' : 'FAIL'}: ${message}`);
    };
    if (hung) check(false, `the tests did not end within ${process.env.GG_TEST_MAX_MINUTES ?? 30} min (see above)`);
    check(
      leftovers.length === 0,
      leftovers.length === 0 ? 'no container left behind' : `${leftovers.length} container(s) left behind: ${leftovers.map((c) => c.Names.join(',')).join(' ')}`,
    );
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
      check(!left, left ? `left behind in the cluster: ${left.split('\n').join(' ')}` : 'no Job, pod or Secret left behind in the cluster');
    }
    // A run's secrets live in memory only while it runs: a file still here is a secret that outlived its run.
    const leaked = await leakedSecrets(secretsRoot);
    check(leaked.length === 0, leaked.length === 0 ? `no secrets file left in ${secretsRoot}` : `${leaked.length} secrets file(s) left behind: ${leaked.join(' ')}`);
    await rm(secretsRoot, { recursive: true, force: true });
    await services.stop();

    const passed = count('pass');
    const failed = count('fail') + count('cancelled');
    const skipped = skippedInTap(tap);
    const todo = count('todo');
    console.log('');
    if (skipped.byReason.size > 0) {
      say('skipped:');
      for (const [reason, n] of skipped.byReason) {
        const kubernetesOff = reason.startsWith('GG_TEST_KUBERNETES=0') ? ' (Kubernetes off)' : '';
        say(`  ${[n.tests && `${n.tests} test(s)`, n.suites && `${n.suites} whole suite(s)`].filter(Boolean).join(' and ')}: ${reason}${kubernetesOff}`);
      }
    }
    for (const r of goResults) say(`${r.name} (Go): ${r.counts.passed} passed, ${r.counts.failed} failed, ${r.counts.skipped} skipped`);
    say(`leftover checks: ${checks.ok} ok, ${checks.failed} failed`);
    // A skipped suite's tests are never declared, so it counts as one skipped test here.
    const suitesNote = skipped.suites > 0 ? ` (${skipped.suites} of them whole suites, whose tests are not counted)` : '';
    console.log(`${passed} passed, ${failed} failed, ${skipped.tests + skipped.suites} skipped${suitesNote}${todo ? `, ${todo} todo` : ''}`);
    return exitCode !== 0 || failed > 0 || checks.failed > 0 ? 1 : 0;
  } catch (err) {
    say(`test set-up failed: ${err instanceof Error ? err.message : String(err)}`);
    await services?.stop();
    return 1;
  }
}

process.exitCode = await main();
