import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NativeConnection, Runtime, Worker } from '@temporalio/worker';
import Docker from 'dockerode';
import type { ClientTls } from '../activities/execution/agent-relay.js';
import { DockerExecutor } from '../activities/execution/docker.js';
import { installRunner } from '../activities/execution/docker-images.js';
import { NoGrantError, createNodeActivities, type RunGrants } from '../activities/node.js';
import { nodeApiRunAgents } from '../activities/storage/node-api-run-agents.js';
import { certificateNotAfter } from '../core/pki.js';
import { RegistryCredentials, type RegistryAuth } from '../core/registry-credentials.js';
import { NodeApi, NodeApiError } from './node-api.js';
import { readNodeIdentity, renewCertificate, renewalDue, type NodeIdentity } from './node-identity.js';

export const nodeTaskQueue = (nodeId: string): string => `node-${nodeId}`;

/** A Docker client for DOCKER_HOST (unix:///path or tcp://host:port) or the default socket. */
export function createDockerClient(host: string | undefined): Docker {
  if (!host) return new Docker();
  const url = new URL(host);
  if (url.protocol === 'unix:') return new Docker({ socketPath: url.pathname });
  return new Docker({ host: url.hostname, port: Number(url.port || 2375), protocol: url.protocol === 'https:' ? 'https' : 'http' });
}

/** This code's version (package.json), as the node reports it in its heartbeat. */
export const NODE_VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** What a node is told locally: none of it names the node or where the control plane is (its identity folder does). */
export interface NodeSettings {
  /** Each run's folder (state, logs, the runner's socket) and the runner binary live under this. */
  workDir: string;
  /** On a memory file system (tmpfs): each run's secrets file. */
  secretsDir: string;
  /** The image the runner is taken from (infra/images/pod-runner). */
  runnerImage: string;
  /** How many runs this node executes at once (its activity slots), as its heartbeat reports. */
  capacity: number;
  /** The Temporal namespace (the gateway lets a node into one). */
  namespace: string;
  /** What images (the runner's, the templates') are pulled with, by registry. */
  registryCredentials: readonly RegistryAuth[];
  /** Between heartbeats to the node API; 30 s unless set. */
  heartbeatSeconds?: number | undefined;
  /** How long the activities get to end when the worker stops; 10 s unless set. */
  shutdownGraceSeconds?: number | undefined;
}

/** Where a node worker tells what it does: the operator reads this (node-main prints it on stderr). */
export interface NodeLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface NodeWorker {
  readonly nodeId: string;
  /** The worker polling now; none while the gateway is away (it is made again when the gateway is back). */
  readonly worker: Worker | undefined;
  /** Settles once the worker has stopped: resolves after stop(), rejects if the node cannot go on (its certificate expired). */
  readonly run: Promise<void>;
  /** Resolves once a worker polls for the first time. */
  readonly ready: Promise<void>;
  /** Stops polling, lets running activities end within the grace time (their containers are adopted later), closes everything. */
  stop(): Promise<void>;
}

const RECONNECT_INITIAL_MS = 1_000;
const RECONNECT_MAX_MS = 30_000;
/** The longest between looks at the certificate's age; a renewal that failed is tried again this soon too. */
const RENEWAL_CHECK_MS = 60_000;

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/**
 * The worker of a node with no database and no address but its gateway's (docs/remote-nodes.md): an
 * activity-only worker on task queue `node-<id>` over mTLS, which executes runs in the local Docker engine.
 * It dials out only and listens on no TCP port (the runners' relays are unix sockets).
 *
 * - The gateway away at start or later: the worker is made again with backoff (the SDK itself retries a
 *   poll through an outage; a failed connect or a worker the SDK gave up on is made again here).
 * - Its certificate is renewed once a third of its lifetime is left; the running worker is moved onto a
 *   connection with the new one, without a restart, and the old connection closed.
 * - A heartbeat (version, capacity, runs executing) every 30 s; what ended runs left here is removed once
 *   the node API says which runs are still active.
 */
export async function startNodeWorker(opts: { identityDir: string; config: NodeSettings; docker: Docker; log?: NodeLog | undefined }): Promise<NodeWorker> {
  const { config, docker } = opts;
  const log: NodeLog = opts.log ?? Runtime.instance().logger;
  let identity = await readNodeIdentity(opts.identityDir);
  const { nodeId } = identity;
  const taskQueue = nodeTaskQueue(nodeId);
  const tlsOf = (id: NodeIdentity): ClientTls => ({ ca: id.caPem, cert: id.certPem, key: id.keyPem });
  let tls = tlsOf(identity);
  const api = new NodeApi(identity.gateway, tls);

  const credentials = new RegistryCredentials(config.registryCredentials);
  let runner: string;
  try {
    runner = await installRunner(docker, config.runnerImage, path.join(config.workDir, 'bin'), credentials, (message, fields) => log.info(message, fields));
  } catch (err) {
    api.close();
    throw new Error(`the runner could not be taken from ${config.runnerImage}: ${errorText(err)}`, { cause: err });
  }
  // Derived from the node's sealing key: stable across attempts, restarts and certificate renewals, never written anywhere.
  const sealingKeyPem = identity.sealingKeyPem;
  const credentialFor = (runId: string) => `ggr_${createHmac('sha256', sealingKeyPem).update(`run-agent:${runId}`).digest('base64url')}`;
  const adapter = new DockerExecutor(docker, config.workDir, config.secretsDir, runner, `https://${identity.gateway}`, nodeApiRunAgents(api), credentialFor, credentials, () => tls);
  const executing = new Map<string, number>();
  const grants: RunGrants = {
    grant: (runId) =>
      api.runGrant(runId).catch((err: unknown) => {
        if (err instanceof NodeApiError && (err.status === 404 || err.status === 403)) throw new NoGrantError(err.message);
        throw err;
      }),
  };
  const activities = createNodeActivities({
    adapter,
    grants,
    sealingKeyPem,
    onRun: (runId, on) => {
      const n = (executing.get(runId) ?? 0) + (on ? 1 : -1);
      if (n > 0) executing.set(runId, n);
      else executing.delete(runId);
    },
  });

  const stopping = new AbortController();
  let connection: NativeConnection | undefined;
  /** The identity whose certificate `connection` was made with. */
  let connectedWith: NodeIdentity | undefined;
  let current: Worker | undefined;
  let leftoversDone = false;
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (markReady = resolve));

  const connect = (id: NodeIdentity) =>
    NativeConnection.connect({
      address: id.gateway,
      tls: { serverRootCACertificate: Buffer.from(id.caPem), clientCertPair: { crt: Buffer.from(id.certPem), key: Buffer.from(id.keyPem) } },
    });

  // One removal at a time (the first heartbeat and the first worker both ask at start).
  let removing: Promise<void> | undefined;
  const removeLeftovers = () => (removing ??= removeLeftoversOnce().finally(() => (removing = undefined)));
  const removeLeftoversOnce = async () => {
    if (leftoversDone) return;
    try {
      const removed = await adapter.removeLeftovers((runIds) => api.activeRuns(runIds), (message) => log.warn(message));
      leftoversDone = true;
      if (removed.length > 0) log.info(`removed what ${removed.length} ended run(s) left on this node`, { runIds: removed });
    } catch (err) {
      log.warn(`could not ask which runs are still active to remove what ended runs left here; trying again at the next heartbeat: ${errorText(err)}`);
    }
  };

  // Set once the control plane says this node was revoked: nothing it sends is taken any more, so it stops.
  let revoked: Error | undefined;
  // Since when heartbeats fail: the node says when it reaches the control plane again.
  let awaySince: number | undefined;
  const heartbeat = async () => {
    try {
      await api.heartbeat({ version: NODE_VERSION, capacity: config.capacity, activeRuns: [...executing.keys()] });
      if (awaySince !== undefined) {
        log.info(`reached the control plane through the gateway at ${identity.gateway} again, after ${Math.round((Date.now() - awaySince) / 1000)} s away`);
        awaySince = undefined;
      }
    } catch (err) {
      awaySince ??= Date.now();
      if (err instanceof NodeApiError && err.code === 'NODE_REVOKED') {
        revoked = new Error(`node '${nodeId}' was revoked: the gateway refuses all it sends. Ask an admin for a new node and enrol this machine again (npm run node-worker -- enrol …)`);
        log.error(revoked.message);
        stopping.abort();
        const worker = current;
        if (worker?.getState() === 'RUNNING') worker.shutdown();
        return;
      }
      log.warn(`heartbeat to the node API failed: ${errorText(err)}`);
    }
    await removeLeftovers();
  };

  /** Makes workers until stopped: each one runs until the SDK gives up on it (or stop()), then the next is made after a backoff. */
  const supervise = async (): Promise<void> => {
    let delay = RECONNECT_INITIAL_MS;
    while (!stopping.signal.aborted) {
      if (certificateNotAfter(identity.certPem).getTime() <= Date.now()) {
        throw new Error(`this node's certificate expired at ${certificateNotAfter(identity.certPem).toISOString()} before it could be renewed: enrol the node again (npm run node-worker -- enrol …)`);
      }
      let conn: NativeConnection | undefined;
      try {
        const id = identity;
        conn = await connect(id);
        connection = conn;
        connectedWith = id;
        // Leftovers go before the first poll: nothing of this worker adopts a container yet.
        await removeLeftovers();
        current = await Worker.create({
          connection: conn,
          namespace: config.namespace,
          taskQueue,
          activities,
          // Runs are long and mostly waiting; the limit is about how many containers this node carries.
          maxConcurrentActivityTaskExecutions: config.capacity,
          // A cancel reaches an activity only in the answer to a heartbeat; the SDK otherwise holds heartbeats
          // back for up to 80% of the heartbeat timeout, which would delay every cancel by ~16 s.
          maxHeartbeatThrottleInterval: '1 second',
          shutdownGraceTime: `${config.shutdownGraceSeconds ?? 10} seconds`,
        });
      } catch (err) {
        connection = undefined;
        await conn?.close().catch(() => undefined);
        if (stopping.signal.aborted) break;
        log.warn(`cannot reach Temporal through the gateway at ${identity.gateway}; trying again in ${Math.round(delay / 1000)} s: ${errorText(err)}`);
        await sleep(delay, undefined, { signal: stopping.signal }).catch(() => undefined);
        delay = Math.min(RECONNECT_MAX_MS, delay * 2);
        continue;
      }
      delay = RECONNECT_INITIAL_MS;
      log.info(`node '${nodeId}' polls task queue ${taskQueue} through the gateway at ${identity.gateway}`);
      markReady();
      const worker = current;
      try {
        const running = worker.run();
        // Renewed while this worker was being made: it moves onto the new certificate at once.
        if (connectedWith !== identity) void moveOnto(worker, identity);
        // stop() came while the worker was being made: it found none to shut down.
        if (stopping.signal.aborted && worker.getState() === 'RUNNING') worker.shutdown();
        await running;
        if (!stopping.signal.aborted) log.warn('the worker stopped by itself; making it again');
      } catch (err) {
        if (!stopping.signal.aborted) log.warn(`the worker failed (${errorText(err)}); making it again in ${Math.round(delay / 1000)} s`);
      } finally {
        current = undefined;
        const used = connection;
        connection = undefined;
        await used?.close().catch(() => undefined);
      }
      await sleep(delay, undefined, { signal: stopping.signal }).catch(() => undefined);
    }
    if (revoked) throw revoked;
  };

  /** Moves a running worker (its polls, its activities' heartbeats and answers) onto a connection with `id`'s certificate, and closes the one before. */
  const moveOnto = async (worker: Worker, id: NodeIdentity) => {
    if (worker.getState() !== 'RUNNING' || connectedWith === id) return;
    try {
      const fresh = await connect(id);
      const old = connection;
      worker.connection = fresh;
      connection = fresh;
      connectedWith = id;
      await old?.close().catch((err: unknown) => log.warn(`closing the connection of the previous certificate failed: ${errorText(err)}`));
      log.info('the worker moved onto a connection with the renewed certificate, without a restart');
    } catch (err) {
      log.warn(`could not move the worker onto a connection with the renewed certificate; it will use it when it reconnects: ${errorText(err)}`);
    }
  };

  /** Renews the certificate when a third of its lifetime is left, and moves everything onto it. */
  const renewIfDue = async (): Promise<'failed' | undefined> => {
    if (Date.now() < renewalDue(identity.certPem).getTime()) return;
    let renewed: NodeIdentity;
    try {
      renewed = await renewCertificate(identity, api);
    } catch (err) {
      log.warn(`renewing this node's certificate (valid until ${certificateNotAfter(identity.certPem).toISOString()}) failed; trying again in ${RENEWAL_CHECK_MS / 1000} s: ${errorText(err)}`);
      return 'failed';
    }
    identity = renewed;
    tls = tlsOf(renewed);
    api.setCredentials(tls);
    log.info(`renewed this node's certificate: valid until ${certificateNotAfter(renewed.certPem).toISOString()}`);
    const worker = current;
    // No worker now: the next one connects with the new certificate (supervise() moves one made meanwhile).
    if (worker) await moveOnto(worker, renewed);
  };

  let beating: Promise<void> | undefined;
  const heartbeats = setInterval(() => {
    beating ??= heartbeat().finally(() => (beating = undefined));
  }, (config.heartbeatSeconds ?? 30) * 1000);
  beating = heartbeat().finally(() => (beating = undefined));
  // The next look at the certificate: when it is due (at most RENEWAL_CHECK_MS ahead), and again after a failure.
  let renewal: NodeJS.Timeout | undefined;
  let renewing: Promise<unknown> | undefined;
  const scheduleRenewal = (failed: boolean) => {
    if (stopping.signal.aborted) return;
    const wait = failed ? RENEWAL_CHECK_MS : Math.max(0, Math.min(RENEWAL_CHECK_MS, renewalDue(identity.certPem).getTime() - Date.now()));
    renewal = setTimeout(() => {
      renewing = renewIfDue().then((outcome) => {
        renewing = undefined;
        scheduleRenewal(outcome === 'failed');
      });
    }, wait);
  };
  scheduleRenewal(false);
  const stopTimers = () => {
    clearInterval(heartbeats);
    clearTimeout(renewal);
  };

  const run = supervise().finally(() => {
    stopping.abort();
    stopTimers();
  });
  run.catch(() => undefined); // the caller awaits it; a stop() must not leave it unhandled
  let stopped: Promise<void> | undefined;
  const stop = async () => {
    stopping.abort();
    stopTimers();
    const worker = current;
    if (worker?.getState() === 'RUNNING') worker.shutdown();
    await run.catch(() => undefined);
    await Promise.allSettled([beating, renewing]);
    api.close();
  };
  return {
    nodeId,
    get worker() {
      return current;
    },
    run,
    ready,
    stop: () => (stopped ??= stop()),
  };
}
