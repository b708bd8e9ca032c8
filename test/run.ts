/**
 * `npm test`: starts what the tests need, runs every test file with Node's test runner against it,
 * then checks that nothing was left behind. Services get ephemeral ports and a fresh database, so a
 * running dev stack is never touched.
 *
 *   DATABASE_URL   use this Postgres server (a fresh database is made on it); otherwise an embedded one
 *   DOCKER_HOST    the Docker engine (default socket otherwise)
 *   npm test -- test/unit   runs only the files under the given paths
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { MANAGED_LABEL } from '../activities/execution/adapter.js';
import { migrate } from '../core/db/migrate.js';
import { ensureBaseImages } from '../infra/dev/images.js';
import { freePort } from '../infra/dev/ports.js';
import { adminUrlOf, dropDatabase, ensureDatabase, startEmbeddedPostgres, withDatabase } from '../infra/dev/postgres.js';
import { say, step } from '../infra/dev/progress.js';
import { ensureTemporalCli, startTemporalServer } from '../infra/dev/temporal.js';
import { WORKFLOWS_PATH } from '../workers/cluster.js';
import { createDockerClient } from '../workers/node.js';
import { SECRETS_ROOT } from './support/system.js';

async function findTestFiles(dir: string): Promise<string[]> {
  if (dir.endsWith('.test.ts')) return [dir];
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.test.ts'))
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}

async function main(): Promise<number> {
  const selected = process.argv.slice(2);
  const files = (await Promise.all((selected.length ? selected : ['test']).map((p) => findTestFiles(p)))).flat();
  if (files.length === 0) throw new Error(`no test files under ${selected.join(' ')}`);
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'glider-gun-test-'));
  // The embedded Postgres runs as its own user when we are root; it must be able to reach its folder.
  await chmod(scratch, 0o755);
  const cleanups: (() => Promise<unknown>)[] = [() => rm(scratch, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c().catch((err: unknown) => say(`cleanup: ${String(err)}`));
  };

  try {
    const docker = createDockerClient(process.env.DOCKER_HOST);
    await step('checking the Docker engine', async () => {
      await docker.ping().catch((err: unknown) => {
        throw new Error(`the tests need a Docker engine (${String(err)}); infra/dev/provision-host.sh installs and starts one`);
      });
    });
    const images = await step('making the base images', () => ensureBaseImages(docker));

    const binary = await ensureTemporalCli();
    const temporal = await step('starting a Temporal dev server (in memory)', async () =>
      startTemporalServer({ binary, port: await freePort() }),
    );
    cleanups.push(() => temporal.stop());

    let databaseUrl: string;
    const database = `gg_test_${process.pid}_${Date.now().toString(36)}`;
    if (process.env.DATABASE_URL) {
      const admin = adminUrlOf(process.env.DATABASE_URL);
      await ensureDatabase(admin, database);
      cleanups.push(() => dropDatabase(admin, database));
      databaseUrl = withDatabase(process.env.DATABASE_URL, database);
      say(`using Postgres from DATABASE_URL, database ${database}`);
    } else {
      const pg = await step('starting an embedded Postgres', async () =>
        startEmbeddedPostgres({ dataDir: path.join(scratch, 'postgres'), port: await freePort(), database }),
      );
      cleanups.push(() => pg.stop());
      databaseUrl = pg.url;
    }
    await step('applying migrations', () => migrate(databaseUrl));

    const bundlePath = path.join(scratch, 'workflow-bundle.js');
    await step('bundling the workflows (once for all test files)', async () => {
      const { code } = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: (m) => say(m), error: (m) => say(m) } });
      await writeFile(bundlePath, code);
    });

    const tapFile = path.join(scratch, 'results.tap');
    say(`running ${files.length} test files`);
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
          '--test-force-exit',
          ...files,
        ],
        {
          stdio: 'inherit',
          env: {
            ...process.env,
            GG_TEST_DATABASE_URL: databaseUrl,
            GG_TEST_TEMPORAL_ADDRESS: temporal.address,
            GG_TEST_TEMPORAL_CLI: binary,
            GG_TEST_WORKFLOW_BUNDLE: bundlePath,
            GG_TEST_IMAGE_BUSYBOX: images.busybox,
            GG_TEST_IMAGE_EXAMPLE: images.example,
            GG_TEST_SCRATCH: scratch,
          },
        },
      );
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
    });

    // Every test cleans up after itself; a container left behind is a bug in the product or in a test.
    const leftovers = await docker.listContainers({ all: true, filters: { label: [MANAGED_LABEL] } });
    for (const c of leftovers) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
    const tap = await readFile(tapFile, 'utf8').catch(() => '');
    const count = (name: string) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tap)?.[1] ?? 0);
    let passed = count('pass');
    let failed = count('fail') + count('cancelled');
    if (leftovers.length > 0) {
      failed += 1;
      say(`FAIL: ${leftovers.length} container(s) left behind: ${leftovers.map((c) => c.Names.join(',')).join(' ')}`);
    } else {
      passed += 1;
      say('ok: no container left behind');
    }
    await rm(SECRETS_ROOT, { recursive: true, force: true });
    await cleanup();
    console.log(`${passed} passed, ${failed} failed`);
    return exitCode !== 0 || failed > 0 ? 1 : 0;
  } catch (err) {
    say(`test set-up failed: ${err instanceof Error ? err.message : String(err)}`);
    await cleanup();
    return 1;
  }
}

process.exitCode = await main();
