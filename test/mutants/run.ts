/**
 * `npm run mutants [-- patch-files...]`: the evidence that each proof can fail. Applies every mutant
 * (test/mutants/*.patch, see mutant.ts) to its own scratch copy of the working tree, runs there only the
 * test it names, and fails unless that test fails. The services are started once (test-services.ts), as
 * `npm test` does; a mutant of the workflows gets its own bundle, one of the pod-runner its own image.
 *
 *   GG_TEST_KUBERNETES=0   no test cluster: mutants whose test needs one are skipped (and counted)
 *   GG_MUTANTS_CONTROL=1   also run each test without its mutant first: it must pass (twice the time)
 *   GG_MUTANTS_JOBS=2      how many mutants run at once
 */
import { execFile, spawn } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { bundleWorkflowCode } from '@temporalio/worker';
import { MANAGED_LABEL, WORKDIR_LABEL } from '../../activities/execution/adapter.js';
import { goEnv } from '../../infra/dev/images.js';
import { RUNS_NAMESPACE, WORKER_SERVICE_ACCOUNT } from '../../infra/dev/kubernetes.js';
import { say } from '../../infra/dev/progress.js';
import { startTestServices, type TestServices } from '../../infra/dev/test-services.js';
import { MUTANTS_DIR, namePattern, readMutant, verdictFromGo, verdictFromTap, type Mutant, type TestVerdict } from './mutant.js';

const run = promisify(execFile);
const ROOT = path.resolve(MUTANTS_DIR, '..', '..');
const TEST_TIMEOUT_MS = 10 * 60_000;
/** The worker's Role, applied by the test cluster at start (infra/dev/kubernetes.ts). */
const RBAC_FILE = 'infra/k8s/rbac.yaml';

type Outcome = 'killed' | 'survived' | 'stale' | 'skipped' | 'control-failed';

/** Tests that use the Kubernetes test cluster (or its registry) read these variables. */
const needsCluster = async (m: Mutant) =>
  m.kind === 'node' && /noCluster|GG_TEST_KUBECONFIG|GG_TEST_REGISTRY|GG_TEST_RUNNER_IMAGE|kubernetesEnv/.test(await readFile(path.join(ROOT, m.test), 'utf8'));

/** The working tree as `git` sees it (tracked and new files, not ignored ones), without node_modules. */
async function copyTree(into: string): Promise<void> {
  const { stdout } = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, maxBuffer: 64 << 20 });
  // (A worktree's node_modules is often a symlink, which `node_modules/` in .gitignore does not match.)
  const files = stdout.split('\0').filter((f) => f && f !== 'node_modules' && !f.startsWith('node_modules/'));
  for (const f of files) {
    const target = path.join(into, f);
    await mkdir(path.dirname(target), { recursive: true });
    // A file deleted but not yet committed is still listed by ls-files: skip it.
    await cp(path.join(ROOT, f), target, { preserveTimestamps: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
  await symlink(path.join(ROOT, 'node_modules'), path.join(into, 'node_modules'));
}

async function apply(tree: string, m: Mutant): Promise<string | undefined> {
  try {
    await run('git', ['apply', '--check', m.file], { cwd: tree });
    await run('git', ['apply', m.file], { cwd: tree });
    return undefined;
  } catch (err) {
    return ((err as { stderr?: string }).stderr ?? String(err)).trim();
  }
}

function spawnCollect(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      output += `\n[mutants] the test did not end within ${TEST_TIMEOUT_MS / 60_000} min: stopped\n`;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }, TEST_TIMEOUT_MS);
    const heartbeat = setInterval(() => say(`  … still running (${output.split('\n').length} lines of output)`), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      clearInterval(heartbeat);
      resolve({ code: code ?? 1, output });
    });
  });
}

/** Runs the mutant's test in `tree` and says what became of it. */
async function runTest(tree: string, m: Mutant, env: NodeJS.ProcessEnv): Promise<{ verdict: TestVerdict; output: string }> {
  if (m.kind === 'go') {
    const r = await spawnCollect('go', ['test', '-count=1', '-v', '-run', `^${m.name}$`, '.'], { cwd: path.join(tree, m.test), env: goEnv() });
    return { verdict: verdictFromGo(r.output, m.name), output: r.output };
  }
  const tap = path.join(tree, '.mutant-results.tap');
  const r = await spawnCollect(
    process.execPath,
    [
      '--import', 'tsx', '--test',
      '--test-reporter=tap', `--test-reporter-destination=${tap}`,
      '--test-reporter=dot', '--test-reporter-destination=stdout',
      `--test-name-pattern=${namePattern(m.name)}`,
      '--test-timeout=300000',
      m.test,
    ],
    { cwd: tree, env },
  );
  const results = await readFile(tap, 'utf8').catch(() => '');
  return { verdict: verdictFromTap(results, m.name), output: `${r.output}\n${results}` };
}

/** Env for a mutant whose patch reaches code the services built once: the workflow bundle, the pod-runner image. */
async function rebuiltFor(tree: string, m: Mutant, services: TestServices | undefined): Promise<Record<string, string>> {
  const extra: Record<string, string> = {};
  if (m.touches.some((f) => f.startsWith('workflows/'))) {
    const { code } = await bundleWorkflowCode({ workflowsPath: path.join(tree, 'workflows', 'index.ts'), logger: quietLogger });
    extra.GG_TEST_WORKFLOW_BUNDLE = path.join(tree, '.mutant-workflow-bundle.js');
    await writeFile(extra.GG_TEST_WORKFLOW_BUNDLE, code);
  }
  if (m.touches.some((f) => f.startsWith('infra/images/pod-runner/')) && services) {
    // The scratch copy's images.ts builds from the scratch copy's sources.
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', '-e', "const m = await import('./infra/dev/images.ts'); const D = (await import('dockerode')).default; process.stdout.write(await m.ensurePodRunnerImage(new D(), () => undefined));"],
      { cwd: tree, env: { ...process.env, ...goEnv() }, maxBuffer: 16 << 20 },
    );
    // Every run goes through the runner: a Docker node installs it from the engine's image, the cluster
    // pulls it from its registry.
    extra.GG_TEST_NODE_RUNNER_IMAGE = stdout.trim();
    if (services.kubernetes) extra.GG_TEST_RUNNER_IMAGE = await services.kubernetes.pushImage(stdout.trim());
  }
  if (m.touches.includes(RBAC_FILE) && services?.kubernetes) {
    // The cluster applied the working tree's Role once, at start: the mutant's Role gets a namespace of its own.
    const k = services.kubernetes;
    const namespace = `gg-mutant-${m.id.replace(/[^a-z0-9-]/g, '-')}`.slice(0, 63).replace(/-+$/, '');
    const rbac = (await readFile(path.join(tree, RBAC_FILE), 'utf8')).replaceAll(RUNS_NAMESPACE, namespace);
    await k.kubectl(['apply', '-f', '-'], { input: rbac });
    // Pods are not admitted before the namespace's default ServiceAccount exists (the controller-manager makes it).
    for (let i = 0; ; i++) {
      if (await k.kubectl(['-n', namespace, 'get', 'serviceaccount', 'default']).then(() => true, () => false)) break;
      if (i === 120) throw new Error(`no ServiceAccount default in ${namespace} after 60 s`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const token = (await k.kubectl(['-n', namespace, 'create', 'token', WORKER_SERVICE_ACCOUNT, '--duration', '2h'])).trim();
    const kubeconfig = path.join(tree, '.mutant-worker.kubeconfig');
    await cp(k.workerKubeconfig, kubeconfig);
    const user = (await k.kubectl(['config', 'view', '-o', 'jsonpath={.users[0].name}'], { kubeconfig })).trim();
    await k.kubectl(['config', 'set-credentials', user, `--token=${token}`], { kubeconfig });
    extra.GG_TEST_KUBECONFIG_WORKER = kubeconfig;
    extra.GG_TEST_K8S_NAMESPACE = namespace;
  }
  const unsupported = m.touches.filter((f) => f.startsWith('infra/images/') && !f.startsWith('infra/images/pod-runner/'));
  if (unsupported.length) throw new Error(`the mutant changes ${unsupported.join(', ')}: base images are built once, not per mutant`);
  return extra;
}

const quiet = () => undefined;
const quietLogger = { log: quiet, trace: quiet, debug: quiet, info: quiet, warn: quiet, error: (msg: string) => say(msg) };

async function main(): Promise<number> {
  const named = process.argv.slice(2);
  const files = named.length
    ? named.map((f) => path.resolve(f))
    : (await readdir(MUTANTS_DIR)).filter((f) => f.endsWith('.patch')).sort().map((f) => path.join(MUTANTS_DIR, f));
  if (files.length === 0) throw new Error('no mutants (test/mutants/*.patch)');
  const mutants = await Promise.all(files.map(readMutant));
  const started = Date.now();
  const control = process.env.GG_MUTANTS_CONTROL === '1';
  const clusterWanted = process.env.GG_TEST_KUBERNETES !== '0';
  const clusterNeeded = clusterWanted && (await Promise.all(mutants.map(needsCluster))).some(Boolean);

  // Unit tests and Go tests need no services: a run of only those starts none.
  const servicesNeeded = mutants.some((m) => m.kind === 'node' && !m.test.startsWith('test/unit/'));
  const services = servicesNeeded ? await startTestServices('mutants', { kubernetes: clusterNeeded }) : undefined;
  const scratch = services?.scratch ?? (await mkdtemp(path.join(os.tmpdir(), 'glider-gun-mutants-')));
  const imagesBefore = services ? new Set((await services.docker.listImages({ all: true })).map((i) => i.Id)) : undefined;
  const outcomes = new Map<Mutant, Outcome>();
  const logDir = await mkdtemp(path.join(os.tmpdir(), 'glider-gun-mutant-logs-'));
  try {
    const tryOne = async (m: Mutant, i: number): Promise<Outcome> => {
      const started = Date.now();
      const tell = (line: string) => say(`[${m.id}] ${line}`);
      tell(`mutant ${i + 1}/${mutants.length}: ${m.description}`);
      const tree = await mkdtemp(path.join(scratch, `mutant-${m.id}-`));
      let extra: Record<string, string> = {};
      // Its own GG_TEST_SCRATCH (the tests' run folders), so its leftovers are told from another mutant's. A short
      // path, as `npm test`'s: a Docker run's agent socket lies deep under it, and a unix socket path is at most
      // 107 bytes (a longer one fails the run before it starts, which would pass for a killed mutant).
      const testScratch = await mkdtemp(path.join(os.tmpdir(), 'ggm-'));
      await chmod(testScratch, 0o755);
      try {
        await copyTree(tree);
        const env = { ...process.env, ...services?.env, GG_TEST_SCRATCH: testScratch, GG_MUTANT_GIT_DIR: path.join(ROOT, '.git') };
        if (control) {
          const before = await runTest(tree, m, env);
          if (before.verdict !== 'passed') {
            await writeFile(path.join(logDir, `${m.id}.control.log`), before.output);
            tell(`CONTROL FAILED: without the mutant, '${m.name}' ${before.verdict} (log: ${logDir}/${m.id}.control.log)`);
            return 'control-failed';
          }
        }
        const refused = await apply(tree, m);
        if (refused) {
          tell(`STALE: the patch no longer applies: ${refused.split('\n')[0]}`);
          return 'stale';
        }
        extra = await rebuiltFor(tree, m, services);
        const { verdict, output } = await runTest(tree, m, { ...env, ...extra });
        await writeFile(path.join(logDir, `${m.id}.log`), output);
        const secs = ((Date.now() - started) / 1000).toFixed(0);
        if (verdict === 'failed') {
          tell(`killed: '${m.name}' failed (${secs}s)`);
          return 'killed';
        }
        if (verdict === 'passed') {
          tell(`SURVIVED: '${m.name}' passed with the mutant in place (${secs}s; log: ${logDir}/${m.id}.log)`);
          return 'survived';
        }
        if (verdict === 'skipped') {
          // Skipped by the test itself: acceptable only when its reason (no cluster) is this run's choice.
          if (!clusterWanted) {
            tell(`skipped: '${m.name}' skips itself without the test cluster (GG_TEST_KUBERNETES=0)`);
            return 'skipped';
          }
          tell(`STALE: '${m.name}' skipped itself, with the test cluster running (log: ${logDir}/${m.id}.log)`);
          return 'stale';
        }
        if (!clusterWanted && (await needsCluster(m))) {
          // Under --test-name-pattern, node does not list a suite that skipped itself, nor its tests.
          tell(`skipped: '${m.name}' did not run, and its file skips suites without the test cluster (GG_TEST_KUBERNETES=0)`);
          return 'skipped';
        }
        tell(`STALE: no test titled '${m.name}' ran in ${m.test} (${secs}s; log: ${logDir}/${m.id}.log)`);
        return 'stale';
      } finally {
        if (services) await removeLeftovers(services, testScratch);
        // A namespace made for the mutant's own Role goes with everything in it.
        if (extra.GG_TEST_K8S_NAMESPACE && extra.GG_TEST_K8S_NAMESPACE !== services?.env.GG_TEST_K8S_NAMESPACE) {
          await services?.kubernetes?.kubectl(['delete', 'namespace', extra.GG_TEST_K8S_NAMESPACE, '--wait=false']);
        }
        await rm(tree, { recursive: true, force: true });
        await rm(testScratch, { recursive: true, force: true });
      }
    };
    // A mutant's test mostly waits on containers, Temporal and the cluster: a few at once keep 2 cores busy.
    const jobs = Math.max(1, Number(process.env.GG_MUTANTS_JOBS ?? 2));
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(jobs, mutants.length) }, async () => {
        while (next < mutants.length) {
          const i = next++;
          const m = mutants[i]!;
          outcomes.set(m, await tryOne(m, i));
        }
      }),
    );
  } finally {
    if (services && imagesBefore) await removeImagesMadeSince(services, imagesBefore);
    await services?.stop();
    if (!services) await rm(scratch, { recursive: true, force: true });
  }
  const count = (o: Outcome) => [...outcomes.values()].filter((x) => x === o).length;
  const bad = mutants.filter((m) => !['killed', 'skipped'].includes(outcomes.get(m) ?? 'stale'));
  for (const m of bad) say(`not killed: ${m.id} (${outcomes.get(m) ?? 'not run'})`);
  console.log(
    `mutants: ${count('killed')} killed, ${count('survived')} survived, ${count('stale')} stale, ${count('control-failed')} control failed, ${count('skipped')} skipped in ${((Date.now() - started) / 60_000).toFixed(1)} min (logs: ${logDir})`,
  );
  return bad.length ? 1 : 0;
}

/**
 * A mutant that breaks a build's cleanup leaves its images on the engine, and the next run's build tests
 * would find them: what template builds and the tests' type images made during the run goes at the end.
 */
async function removeImagesMadeSince(services: TestServices, before: ReadonlySet<string>): Promise<void> {
  const made = (await services.docker.listImages({ all: true }))
    .filter((i) => !before.has(i.Id))
    .filter(
      (i) =>
        Object.keys(i.Labels ?? {}).some((k) => k.startsWith('io.glider-gun.template')) ||
        (i.RepoTags ?? []).every((t) => t === '<none>:<none>' || t.startsWith('glider-gun/test-script:')),
    )
    .sort((a, b) => b.Created - a.Created); // children before their parents
  // Not forced: an image a container still uses (another test run's, beside this one) stays.
  for (const i of made) {
    for (const tag of (i.RepoTags ?? []).filter((t) => t !== '<none>:<none>')) await services.docker.getImage(tag).remove().catch(() => undefined);
    await services.docker.getImage(i.Id).remove().catch(() => undefined);
  }
  if (made.length > 0) say(`removed ${made.length} image(s) that builds under the mutants left`);
}

/** A mutant may break cleanup itself: its containers must not outlive it. */
async function removeLeftovers(services: TestServices, testScratch: string): Promise<void> {
  const mine = (await services.docker.listContainers({ all: true, filters: { label: [MANAGED_LABEL] } })).filter((c) =>
    c.Labels[WORKDIR_LABEL]?.startsWith(`${testScratch}/`),
  );
  for (const c of mine) await services.docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
}

process.exitCode = await main();
