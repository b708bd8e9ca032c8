/**
 * `npm start`: the whole system on one machine with embedded defaults — a Temporal dev server with its UI,
 * Postgres (DATABASE_URL, or an embedded one), migrations, the base images, the cluster worker, the node
 * worker of the built-in node `local` and the HTTP API. Ctrl-C stops everything.
 *
 * If this process dies instead (a crash, `kill -9`), nothing it started outlives it: its daemons get
 * SIGKILL from the kernel (processes.ts, diesWithParent), and a watchdog clears the rest (watchdog.ts). The
 * next start clears whatever is left anyway (leftovers.ts), so it always starts.
 */
import http from 'node:http';
import path from 'node:path';
import { DefaultLogger, Runtime, makeTelemetryFilterString } from '@temporalio/worker';
import { loadConfig } from '../../core/config.js';
import { migrate } from '../../core/db/migrate.js';
import { compose, type ProcessRole } from '../../workers/compose.js';
import { createLogger } from '../../workers/logger.js';
import { createDockerClient, nodeTaskQueue } from '../../workers/node.js';
import { startDevCluster, type DevCluster } from './dev-cluster.js';
import { startDevRegistry } from './dev-registry.js';
import { ensureBaseImages, ensurePodRunnerImage } from './images.js';
import { clearStackLeftovers } from './leftovers.js';
import { isPortInUse } from './ports.js';
import { startEmbeddedPostgres, type Postgres } from './postgres.js';
import { say, step } from './progress.js';
import { liveRecord, removeRecord, writeRecord } from './run-records.js';
import { postgresLine, temporalLines } from './summary.js';
import { ensureTemporalCli, startTemporalServer, temporalCliIfPresent, type TemporalServer } from './temporal.js';
import { awaitEarlierWatchdog, startWatchdog } from './watchdog.js';

/** A node worker has no workflows by design; the SDK's warning about that is noise here. */
class QuietLogger extends DefaultLogger {
  override log(...args: Parameters<DefaultLogger['log']>): void {
    if (!args[1].startsWith('No workflows registered')) super.log(...args);
  }
}

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel, 'glider-gun');
  // We stop the workers ourselves, in order, after the API; the SDK's own signal handling would race us.
  Runtime.install({
    logger: new QuietLogger('WARN'),
    shutdownSignals: [],
    telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'WARN' }) } },
    // The built-in node reaches Temporal through the gateway, which passes no worker heartbeats.
    workerHeartbeatInterval: 0,
  });
  const stops: { what: string; stop: () => Promise<unknown> }[] = [];
  const onStop = (what: string, stop: () => Promise<unknown>) => stops.push({ what, stop });
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say('stopping ...');
    for (const { what, stop } of stops.reverse()) {
      say(`  stopping ${what}`);
      await stop().catch((err: unknown) => say(`  while stopping ${what}: ${String(err)}`));
    }
    await removeRecord(config.dataDir, 'stack', process.pid);
    say('stopped');
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  // `npm start` runs us under tsx: if that launcher is killed, we are adopted by another process; stop in order.
  const launcher = process.ppid;
  const launcherWatch = setInterval(() => {
    if (process.ppid !== launcher) {
      clearInterval(launcherWatch);
      say(`the launcher (pid ${launcher}) has gone`);
      void stopAll(1);
    }
  }, 1_000).unref();

  try {
    await takeDataDir(config.dataDir);
    if (await isPortInUse(config.api.port, config.api.host)) {
      throw new Error(`port ${config.api.port} is in use: stop what uses it, or set GLIDERGUN_API_PORT`);
    }

    let temporal: TemporalServer | undefined;
    let temporalCli: string | undefined;
    if (!config.devStack.startTemporal) {
      say(`using the Temporal server at ${config.temporal.address}`);
    } else {
      const port = config.devStack.temporalPort;
      if (await isPortInUse(port)) {
        throw new Error(`port ${port} is in use: stop what uses it, set GLIDERGUN_TEMPORAL_PORT, or set TEMPORAL_ADDRESS to use that server`);
      }
      if (await isPortInUse(config.temporal.uiPort)) throw new Error(`port ${config.temporal.uiPort} is in use: set TEMPORAL_UI_PORT`);
      const binary = await ensureTemporalCli();
      temporalCli = path.resolve(binary);
      temporal = await step('starting the Temporal dev server', () =>
        startTemporalServer({ binary, port, uiPort: config.temporal.uiPort, dbFile: path.join(config.dataDir, 'temporal.db') }),
      );
      onStop('the Temporal dev server', () => temporal!.stop());
    }

    let databaseUrl = config.databaseUrl;
    let embeddedPostgres: { dataDir: string } | undefined;
    if (!databaseUrl) {
      const pg: Postgres = await step('starting the embedded Postgres', () =>
        startEmbeddedPostgres({ dataDir: path.join(config.dataDir, 'postgres'), port: config.devStack.postgresPort, database: 'glidergun' }),
      );
      onStop('Postgres', () => pg.stop());
      databaseUrl = pg.url;
      embeddedPostgres = { dataDir: path.join(config.dataDir, 'postgres') };
    }
    await step('applying database migrations', () => migrate(databaseUrl));

    // The engine the dev infrastructure (images, the dev cluster) is made with; the composed process has its own client.
    const docker = createDockerClient(config.docker.host);
    // GLIDERGUN_DEV_KUBERNETES=true: a single-node Kubernetes of our own (the tests' one) for the `cluster` target.
    let devCluster: DevCluster | undefined;
    const devKubernetes = process.env.GLIDERGUN_DEV_KUBERNETES === 'true';
    // Builds need a registry, and the dev cluster pulls from one: Debian's docker-registry with the stack's
    // data, on a port kept across restarts, since every built template version names it.
    let devRegistry: string | undefined;
    if (devKubernetes || !config.builds.registry) {
      try {
        const registry = await step('starting the image registry', () => startDevRegistry(config.dataDir, say));
        onStop('the image registry', () => registry.stop());
        devRegistry = registry.address;
      } catch (err) {
        if (devKubernetes) throw err;
        say(`no image registry (${err instanceof Error ? err.message : String(err)}): template builds are refused until`);
        say('  GLIDERGUN_REGISTRY names one (infra/dev/provision-host.sh installs docker-registry)');
      }
    }
    if (devKubernetes) {
      devCluster = await startDevCluster(config, docker, path.join(config.dataDir, 'kubernetes'), devRegistry!);
      onStop('the Kubernetes cluster', () => devCluster!.cluster.stop());
    }
    let workerConfig = devCluster?.config ?? config;
    if (!workerConfig.builds.registry && devRegistry) {
      workerConfig = { ...workerConfig, builds: { ...workerConfig.builds, registry: `${devRegistry}/glider-gun/templates` } };
    }

    let dockerReady = false;
    try {
      await docker.ping();
      dockerReady = true;
    } catch (err) {
      say(`no Docker engine at ${config.docker.host ?? '/var/run/docker.sock'} (${err instanceof Error ? err.message : String(err)}):`);
      say(`  the node '${config.node.id}' worker is not started; runs targeting it wait for it, then fail as node-unavailable.`);
      say('  Install and start Docker (infra/dev/provision-host.sh does both), then restart.');
    }
    let exampleImage: string | undefined;
    if (dockerReady) {
      try {
        exampleImage = (await ensureBaseImages(docker)).example;
      } catch (err) {
        say(`base images not made: ${err instanceof Error ? err.message : String(err)}`);
      }
      // The built-in node runs beside the cluster; its runners reach the agent API through the gateway.
      if (!workerConfig.node.runnerImage) {
        const runnerImage = await step('building the runner (infra/images/pod-runner)', () => ensurePodRunnerImage(docker));
        workerConfig = { ...workerConfig, node: { ...workerConfig.node, runnerImage } };
      }
    }
    const builds = dockerReady && workerConfig.builds.registry !== undefined;
    // The gateway is where remote nodes dial in, and the built-in node goes through it too.
    const roles: ProcessRole[] = ['api', 'cluster', 'gateway', ...(dockerReady ? (['node'] as const) : []), ...(builds ? (['builder'] as const) : [])];
    const composed = await compose({ ...workerConfig, databaseUrl }, roles, { log, onStopping: (what) => say(`  stopping ${what}`) });
    onStop('the API, the workers and their connections', () => composed.stop());
    await step('bundling workflows, starting the workers and the API', () => composed.start());
    const { api } = composed;
    if (!api) throw new Error('the stack composes the API, yet none listens');
    if (composed.gateway) say(`node gateway listens at ${composed.gateway.address} (remote nodes dial it: docs/remote-nodes.md)`);
    if (dockerReady) say(`node worker '${config.node.id}' polls task queue ${nodeTaskQueue(config.node.id)} through the gateway`);
    if (builds) say(`builder worker pushes template images to ${workerConfig.builds.registry}`);

    if (devCluster) {
      // Pods reach this host only on their bridge: the agent API (and the rest) also listens there.
      const forPods = http.createServer(api.app);
      await new Promise<void>((resolve, reject) => forPods.once('error', reject).listen(devCluster.agentPort, devCluster.cluster.hostAddress, resolve));
      onStop('the API for pods', () => new Promise((resolve) => forPods.close(resolve)));
    }

    say('');
    say(`API          ${api.url}   (try: curl ${api.url}/healthz; browse ${api.url}/docs)`);
    if (api.adminToken.state === 'elsewhere') say(`admin token  none in ${config.security.adminTokenFile}: use an admin token you already have`);
    else say(`admin token  ${api.adminToken.file}${api.adminToken.state === 'created' ? ' (new)' : ''}   (curl -H "Authorization: Bearer $(cat ${api.adminToken.file})" ...)`);
    if (temporal?.uiUrl) say(`Temporal UI  ${temporal.uiUrl}`);
    for (const line of temporalLines(config.temporal.address, temporalCli ?? (await temporalCliIfPresent()))) say(line);
    say(postgresLine(databaseUrl, embeddedPostgres));
    say(`data         ${config.dataDir}`);
    if (devRegistry) say(`registry     ${devRegistry}   (its images in ${path.join(config.dataDir, 'registry')}; the port is kept)`);
    if (exampleImage) say(`example image glider-gun/example-template:latest (see docs/operators-guide.md for a first deployment)`);
    if (devCluster) {
      say(`Kubernetes   target {"kind":"cluster"} runs Jobs in namespace ${devCluster.cluster.namespace}; image ${devCluster.exampleImage}`);
      say(`             kubectl: ${devCluster.cluster.binDir}/kubectl --kubeconfig ${devCluster.cluster.adminKubeconfig} -n ${devCluster.cluster.namespace} get jobs,pods`);
    }
    say('Ctrl-C stops everything.');
  } catch (err) {
    say(`start-up failed: ${err instanceof Error ? err.message : String(err)}`);
    await stopAll(1);
  }
}

/**
 * One stack per data dir. What an earlier start left (it died) is cleared first, once its watchdog is
 * done; then a watchdog of our own is started before anything else, to clear up after us should we die.
 */
async function takeDataDir(dataDir: string): Promise<void> {
  const other = await liveRecord(dataDir, 'stack');
  if (other && other.pid !== process.pid) {
    throw new Error(`another dev stack (pid ${other.pid}) runs on ${dataDir}: stop it first (Ctrl-C in its terminal, or kill ${other.pid}), or set GLIDERGUN_DATA_DIR`);
  }
  await awaitEarlierWatchdog(dataDir, say);
  const cleared = await step('clearing what an earlier start left behind', () => clearStackLeftovers(dataDir));
  if (cleared.length > 0) say(`  an earlier start had died: cleared ${cleared.join(', ')}`);
  await writeRecord(dataDir, 'stack', process.pid);
  const watchdog = await startWatchdog(dataDir, say);
  say(`watchdog (pid ${watchdog.pid}) clears up should this process die; its log: ${watchdog.logFile}`);
}

await main();
