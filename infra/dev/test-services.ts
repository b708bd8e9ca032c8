/**
 * The services the tests and the benchmarks run against, started afresh with ephemeral ports: a Temporal
 * dev server in memory, a new database (on DATABASE_URL's server, else an embedded Postgres), the Docker
 * engine's base images and the workflow bundle. Exposed to the code under test as GG_TEST_* variables.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type Docker from 'dockerode';
import { migrate } from '../../core/db/migrate.js';
import { WORKFLOWS_PATH } from '../../workers/cluster.js';
import { createDockerClient } from '../../workers/node.js';
import { ensureBaseImages } from './images.js';
import { freePort } from './ports.js';
import { adminUrlOf, dropDatabase, ensureDatabase, startEmbeddedPostgres, withDatabase } from './postgres.js';
import { say, step } from './progress.js';
import { ensureTemporalCli, startTemporalServer } from './temporal.js';

export interface TestServices {
  docker: Docker;
  scratch: string;
  /** GG_TEST_* variables describing these services. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startTestServices(purpose: string): Promise<TestServices> {
  const scratch = await mkdtemp(path.join(os.tmpdir(), `glider-gun-${purpose}-`));
  // The embedded Postgres runs as its own user when we are root; it must be able to reach its folder.
  await chmod(scratch, 0o755);
  const cleanups: (() => Promise<unknown>)[] = [() => rm(scratch, { recursive: true, force: true })];
  const stop = async () => {
    for (const c of cleanups.reverse()) await c().catch((err: unknown) => say(`cleanup: ${String(err)}`));
  };
  try {
    const docker = createDockerClient(process.env.DOCKER_HOST);
    await step('checking the Docker engine', async () => {
      await docker.ping().catch((err: unknown) => {
        throw new Error(`a Docker engine is needed (${String(err)}); infra/dev/provision-host.sh installs and starts one`);
      });
    });
    const images = await step('making the base images', () => ensureBaseImages(docker));

    const binary = await ensureTemporalCli();
    const temporal = await step('starting a Temporal dev server (in memory)', async () => startTemporalServer({ binary, port: await freePort() }));
    cleanups.push(() => temporal.stop());

    let databaseUrl: string;
    const database = `gg_${purpose}_${process.pid}_${Date.now().toString(36)}`;
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
    await step('bundling the workflows (once for the whole run)', async () => {
      const quiet = () => undefined;
      const { code } = await bundleWorkflowCode({
        workflowsPath: WORKFLOWS_PATH,
        logger: { log: quiet, trace: quiet, debug: quiet, info: quiet, warn: (m) => say(m), error: (m) => say(m) },
      });
      await writeFile(bundlePath, code);
    });

    return {
      docker,
      scratch,
      env: {
        GG_TEST_DATABASE_URL: databaseUrl,
        GG_TEST_TEMPORAL_ADDRESS: temporal.address,
        GG_TEST_TEMPORAL_CLI: binary,
        GG_TEST_WORKFLOW_BUNDLE: bundlePath,
        GG_TEST_IMAGE_BUSYBOX: images.busybox,
        GG_TEST_IMAGE_EXAMPLE: images.example,
        GG_TEST_SCRATCH: scratch,
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
