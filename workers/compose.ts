/**
 * The composition root of every Glider Gun process: the entry points (workers/*-main.ts), the dev stack and
 * the test system all build a process here, from the roles it plays. What the roles share — the Postgres
 * pool, the key box, the Temporal connections, the Docker client, the stores — is built once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, type Worker, type WorkflowBundleOption } from '@temporalio/worker';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import type { RunAgents } from '../activities/execution/outcome.js';
import { postgresRunAgents } from '../activities/storage/postgres-run-agents.js';
import type { Config } from '../core/config.js';
import { SecretBox } from '../core/crypto.js';
import { migrate } from '../core/db/migrate.js';
import { createPool, type Db } from '../core/db/pool.js';
import { loadEncryptionKey } from '../core/keys.js';
import { startApiServer, type ApiServer } from './api.js';
import { createBuilderWorker } from './builder.js';
import { createClusterWorker } from './cluster.js';
import { createLogger } from './logger.js';
import { provisionBuiltInNode } from './built-in-node.js';
import { startGatewayProcess, type Gateway } from './gateway-process.js';
import { createDockerClient, nodeTaskQueue, startNodeWorker, type NodeLog } from './node.js';
import { startReconciler } from './reconciler.js';

/**
 * `api`: the HTTP API. `cluster`: the deployment workflows, the database activities, the `cluster` target's
 * runs when Kubernetes is configured, and the run reconciler. `gateway`: the node gateway (a Go process of
 * its own, infra/images/gateway) in front of this process's API and Temporal. `node`: the built-in node's
 * runs in Docker, through the gateway like any remote node. `builder`: template image builds.
 */
export type ProcessRole = 'api' | 'cluster' | 'gateway' | 'node' | 'builder';
export type WorkerRole = Exclude<ProcessRole, 'api' | 'gateway'>;

export interface ComposeOptions {
  /** A prebuilt workflow bundle (the tests build one for all files); otherwise the cluster worker bundles at start. */
  workflowBundle?: WorkflowBundleOption | undefined;
  /** Where the API listens instead of config.api.port; 0 takes any free port (the tests). */
  apiPort?: number | undefined;
  /** Where the API and the run reconciler report; a logger at config.logLevel if not given. */
  log?: Logger | undefined;
  /** The run reconciler comes with the cluster role unless this is false (the tests settle runs by hand). */
  reconciler?: boolean | undefined;
  /** The most Postgres connections the process holds. */
  poolSize?: number | undefined;
  /** Apply the database migrations at start: a process run on its own does; the dev stack and the tests migrate first. */
  migrate?: boolean | undefined;
  /** Hears each part of the process as stop() reaches it (the dev stack tells its user). */
  onStopping?: ((what: string) => void) | undefined;
  /** Where the gateway listens instead of the API's host and config.nodes.gatewayPort; port 0 takes any free port (the tests). */
  gatewayListen?: string | undefined;
}

export interface ComposedProcess {
  readonly config: Config;
  readonly db: Db;
  readonly docker: Docker;
  /** The Temporal client of the API and the reconciler: absent from a process with neither. */
  readonly temporal: Client | undefined;
  /** The API, once start() has it listening; absent from a process without the api role. */
  readonly api: ApiServer | undefined;
  /** The node gateway, once start() has it listening; absent from a process without the gateway role. */
  readonly gateway: Gateway | undefined;
  /**
   * Starts the roles in dependency order: the cluster worker (workflows first, so nothing dispatched waits
   * for them) and the reconciler, the API, then the node worker (its runners call the API) and the builder.
   * `leaveStopped` names workers to start later with startWorker (a test of an outage from the start).
   */
  start(opts?: { leaveStopped?: readonly WorkerRole[] }): Promise<void>;
  /** Starts one worker role of this process again after stopWorker (an outage over); does nothing if it runs. */
  startWorker(role: WorkerRole): Promise<void>;
  /** Stops one worker role and waits for its activities to end (an outage of that worker); the rest keeps running. */
  stopWorker(role: WorkerRole): Promise<void>;
  /** Stops everything, in order: the API, the reconciler, the workers (shut down, then awaited, then closed), the connections, the pool. */
  stop(): Promise<void>;
}

interface RunningWorker {
  /** Settles when the worker has stopped. */
  run: Promise<void>;
  /** Asks the worker to stop: it stops polling and lets its activities end within its grace time. */
  shutdown: () => void;
  /** What the worker's adapter keeps open beyond the worker itself (the Kubernetes pod watch). */
  close: () => Promise<void>;
}

/** A Temporal worker as a RunningWorker. */
function temporalWorker(worker: Worker, close: () => Promise<void>): RunningWorker {
  return {
    run: worker.run(),
    shutdown: () => {
      // A worker that failed, or that the SDK is already stopping, refuses a second shutdown.
      if (worker.getState() === 'RUNNING') worker.shutdown();
    },
    close,
  };
}

const WORKER_ROLES: readonly WorkerRole[] = ['cluster', 'node', 'builder'];
/** How many runs the built-in node executes at once. */
const BUILT_IN_NODE_CAPACITY = 20;
const BUILT_IN_NODE_READY_MS = 30_000;

function nodeLog(log: Logger): NodeLog {
  const node = log.child({ component: 'node' });
  return {
    info: (message, fields) => node.info(fields ?? {}, message),
    warn: (message, fields) => node.warn(fields ?? {}, message),
    error: (message, fields) => node.error(fields ?? {}, message),
  };
}
const RECONCILE_EVERY_MS = 30_000;
/** A run younger than this may still be on its way to its workflow; the reconciler leaves it alone. */
const RECONCILE_OLDER_THAN_SECONDS = 60;
/** A lone node worker only reads its runners' reports; the other roles serve requests and activities in parallel. */
const poolSizeFor = (roles: ReadonlySet<ProcessRole>): number => ([...roles].every((role) => role === 'node') ? 4 : 10);

/** Builds what the roles share; nothing listens or polls until start(). */
export async function compose(config: Config, roleList: readonly ProcessRole[], options: ComposeOptions = {}): Promise<ComposedProcess> {
  const roles = new Set(roleList);
  if (roles.size === 0) throw new Error('a process needs at least one role');
  const databaseUrl = config.databaseUrl;
  if (!databaseUrl) throw new Error(`DATABASE_URL is required: every role (${[...roles].join(', ')}) keeps or reads its records in Postgres`);
  const log = options.log ?? createLogger(config.logLevel, 'glider-gun');
  const reconciles = roles.has('cluster') && options.reconciler !== false;
  // The API probes Docker only in a process that uses it: a lone API has no engine to report on.
  const usesDocker = roles.has('node') || roles.has('builder');

  const closers: (() => Promise<unknown>)[] = [];
  const closeBuilt = async () => {
    for (const close of closers.reverse()) await close();
  };
  try {
    const db = createPool(databaseUrl, options.poolSize ?? poolSizeFor(roles));
    closers.push(() => db.end());
    const secrets =
      roles.has('api') || roles.has('cluster')
        ? new SecretBox(await loadEncryptionKey({ base64: config.security.encryptionKey, file: config.security.encryptionKeyFile }))
        : undefined;
    if (roles.has('node') && !(roles.has('api') && roles.has('gateway'))) {
      throw new Error('the built-in node is composed with the api and gateway roles (it is enrolled with the API\'s CA and reaches Temporal through the gateway); a node on its own is `npm run node-worker`');
    }
    // The built-in node dials the gateway with a connection of its own; the other workers Temporal itself.
    const native = roles.has('cluster') || roles.has('builder') ? await NativeConnection.connect({ address: config.temporal.address }) : undefined;
    if (native) closers.push(() => native.close());
    const connection = roles.has('api') || reconciles ? await Connection.connect({ address: config.temporal.address }) : undefined;
    if (connection) closers.push(() => connection.close());
    const temporal = connection && new Client({ connection, namespace: config.temporal.namespace });
    const docker = createDockerClient(config.docker.host);
    const agents = postgresRunAgents(db);
    return assemble({ config, databaseUrl, roles, options, log, reconciles, usesDocker, db, secrets, native, connection, temporal, docker, agents, closeBuilt });
  } catch (err) {
    await closeBuilt().catch(() => undefined);
    throw err;
  }
}

function assemble(built: {
  config: Config;
  databaseUrl: string;
  roles: ReadonlySet<ProcessRole>;
  options: ComposeOptions;
  log: Logger;
  reconciles: boolean;
  usesDocker: boolean;
  db: Db;
  secrets: SecretBox | undefined;
  native: NativeConnection | undefined;
  connection: Connection | undefined;
  temporal: Client | undefined;
  docker: Docker;
  agents: RunAgents;
  /** Closes the connections and the pool, in the reverse of their making. */
  closeBuilt: () => Promise<void>;
}): ComposedProcess {
  const { config, roles, options, log, db, secrets, native, connection, temporal, docker, agents } = built;
  let api: ApiServer | undefined;
  let gateway: Gateway | undefined;
  let reconciler: { stop(): Promise<void> } | undefined;
  const running = new Map<WorkerRole, RunningWorker>();
  let started = false;
  let stopping = false;
  // A stop waits for a start under way, which gives up at its next step, so nothing is started after the stop.
  const underWay = new Set<Promise<unknown>>();
  const track = <T>(promise: Promise<T>): Promise<T> => {
    underWay.add(promise);
    const forget = () => underWay.delete(promise);
    void promise.then(forget, forget);
    return promise;
  };
  const checkNotStopping = () => {
    if (stopping) throw new Error('the process was stopped while it started');
  };

  const withNative = () => {
    if (!native) throw new Error('unreachable: the cluster and builder roles have their Temporal connection');
    return native;
  };
  const create: Record<WorkerRole, () => Promise<RunningWorker>> = {
    cluster: async () => {
      if (!secrets) throw new Error('unreachable: the cluster role has its key box');
      const { worker, close } = await createClusterWorker({ connection: withNative(), config, db, secrets, agents, workflowBundle: options.workflowBundle });
      return temporalWorker(worker, close);
    },
    node: async () => {
      if (!api || !gateway) throw new Error('the built-in node starts after the API and the gateway');
      const identityDir = await provisionBuiltInNode(db, config, api.nodeCa, gateway.address);
      if (!config.node.runnerImage) {
        throw new Error('GLIDERGUN_NODE_RUNNER_IMAGE is not set: a node runs every template under the runner of that image (npm run pod-runner-image builds it)');
      }
      const node = await startNodeWorker({
        identityDir,
        config: {
          workDir: config.node.workDir,
          secretsDir: config.node.secretsDir,
          runnerImage: config.node.runnerImage,
          capacity: BUILT_IN_NODE_CAPACITY,
          namespace: config.temporal.namespace,
          registryCredentials: config.registries.credentials,
        },
        docker,
        log: nodeLog(log),
      });
      // Started means polling, with what ended runs left here removed first, as a node process does; the
      // gateway is this process's own, so this is a matter of moments unless something is wrong.
      const polling = await Promise.race([node.ready.then(() => true), sleep(BUILT_IN_NODE_READY_MS, false, { ref: false })]);
      if (!polling) log.warn(`the built-in node does not poll yet after ${BUILT_IN_NODE_READY_MS / 1000} s; it goes on trying`);
      let stopped: Promise<void> | undefined;
      return { run: node.run, shutdown: () => void (stopped ??= node.stop().catch(() => undefined)), close: async () => stopped };
    },
    builder: async () => temporalWorker(await createBuilderWorker({ connection: withNative(), config, db, docker }), () => Promise.resolve()),
  };

  const launch = async (role: WorkerRole) => {
    if (running.has(role)) return;
    if (!roles.has(role)) throw new Error(`this process was composed without the ${role} role`);
    running.set(role, await create[role]());
  };
  const shutDown = (entry: RunningWorker) => entry.shutdown();
  const halt = async (role: WorkerRole) => {
    const entry = running.get(role);
    if (!entry) return;
    running.delete(role);
    shutDown(entry);
    try {
      await entry.run;
    } finally {
      await entry.close();
    }
  };

  const startAll = async (leaveStopped: ReadonlySet<WorkerRole>) => {
    // A second start would open a second API beside the first.
    if (started) throw new Error('the process has been started already');
    started = true;
    if (options.migrate) await migrate(built.databaseUrl);
    checkNotStopping();
    if (roles.has('cluster') && !leaveStopped.has('cluster')) await launch('cluster');
    checkNotStopping();
    if (built.reconciles && temporal) {
      reconciler = startReconciler(
        { db, temporal, taskQueue: config.temporal.taskQueue },
        {
          everyMs: RECONCILE_EVERY_MS,
          olderThanSeconds: RECONCILE_OLDER_THAN_SECONDS,
          onError: (err) => log.warn({ err }, `reconciling runs failed; retrying in ${RECONCILE_EVERY_MS / 1000} s`),
          onHanded: (runIds) => log.info({ runIds }, `handed ${runIds.length} run(s) no workflow was executing back to their workflows`),
        },
      );
    }
    if (roles.has('api') && connection) {
      api = await startApiServer({ config, db, connection, temporal, secrets, docker: built.usesDocker ? docker : undefined, log, port: options.apiPort });
    }
    checkNotStopping();
    if (roles.has('gateway')) {
      if (!api) throw new Error('the gateway is composed with the api role: it is started in front of this process\'s API');
      gateway = await startGatewayProcess({ config, ca: api.nodeCa, apiUrl: api.url, listen: options.gatewayListen ?? `${config.api.host}:${config.nodes.gatewayPort}`, log });
      log.info({ address: gateway.address }, 'the node gateway listens');
    }
    for (const role of ['node', 'builder'] as const) {
      checkNotStopping();
      if (roles.has(role) && !leaveStopped.has(role)) await launch(role);
    }
  };

  const stopAll = async () => {
    stopping = true;
    await Promise.allSettled([...underWay]);
    const failures: unknown[] = [];
    const part = async (what: string, stop: () => Promise<unknown>) => {
      options.onStopping?.(what);
      await stop().catch((err: unknown) => failures.push(err));
    };
    // The API first: no new run is accepted while the workers that would execute it go.
    const [listening, reconciling] = [api, reconciler];
    if (listening) await part('the API', () => listening.close());
    if (reconciling) await part('the run reconciler', () => reconciling.stop());
    const workers = WORKER_ROLES.flatMap((role) => {
      const entry = running.get(role);
      return entry ? [{ role, entry }] : [];
    });
    running.clear();
    // All at once: each waits up to its grace time for its activities, and they need not wait in turn.
    for (const { entry } of workers) shutDown(entry);
    for (const { role, entry } of workers) await part(workerName(config, role), () => entry.run);
    if (workers.length > 0) {
      await part('what the workers keep open', async () => {
        for (const { entry } of workers) await entry.close();
      });
    }
    // After the node: its last calls go through the gateway.
    const proxying = gateway;
    if (proxying) await part('the node gateway', () => proxying.stop());
    await part('the Temporal connections and the database pool', built.closeBuilt);
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) throw new AggregateError(failures, 'stopping the process failed in several parts');
  };
  let stopped: Promise<void> | undefined;

  return {
    config,
    db,
    docker,
    temporal,
    get api() {
      return api;
    },
    get gateway() {
      return gateway;
    },
    start: (opts = {}) => track(startAll(new Set(opts.leaveStopped ?? []))),
    startWorker: (role) => {
      checkNotStopping();
      return track(launch(role));
    },
    stopWorker: (role) => halt(role),
    stop: () => (stopped ??= stopAll()),
  };
}

function workerName(config: Config, role: WorkerRole): string {
  switch (role) {
    case 'cluster':
      return `the cluster worker (task queue ${config.temporal.taskQueue})`;
    case 'node':
      return `the node worker '${config.node.id}' (task queue ${nodeTaskQueue(config.node.id)})`;
    case 'builder':
      return 'the builder worker';
  }
}
