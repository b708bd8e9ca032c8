import type { NativeConnection } from '@temporalio/worker';
import { Runtime, Worker } from '@temporalio/worker';
import Docker from 'dockerode';
import { DockerExecutor } from '../activities/execution/docker.js';
import type { StateStore, TemplateFileStore } from '../activities/execution/adapter.js';
import type { LogSink } from '../activities/execution/logs.js';
import { createNodeActivities } from '../activities/node.js';
import type { Config } from '../core/config.js';
import { loadNodeKey } from '../core/keys.js';
import { RegistryCredentials } from '../core/registry-credentials.js';

export const nodeTaskQueue = (nodeId: string): string => `node-${nodeId}`;

/** A Docker client for DOCKER_HOST (unix:///path or tcp://host:port) or the default socket. */
export function createDockerClient(host: string | undefined): Docker {
  if (!host) return new Docker();
  const url = new URL(host);
  if (url.protocol === 'unix:') return new Docker({ socketPath: url.pathname });
  return new Docker({ host: url.hostname, port: Number(url.port || 2375), protocol: url.protocol === 'https:' ? 'https' : 'http' });
}

/**
 * A node worker: polls only its own node's task queue and only executes runs in the local Docker engine.
 * It dials out to Temporal and accepts no connections.
 */
export async function createNodeWorker(opts: {
  connection: NativeConnection;
  config: Config;
  docker: Docker;
  logSink: LogSink;
  stateStore: StateStore;
  templateFiles?: TemplateFileStore;
  /** Which of the given runs are still active: at start, the worker removes what ended runs left on this node. */
  activeRuns: (runIds: readonly string[]) => Promise<ReadonlySet<string>>;
}): Promise<Worker> {
  const { config } = opts;
  const nodePrivateKeyPem = await loadNodeKey(config.node.workDir);
  const adapter = new DockerExecutor(
    opts.docker,
    config.node.workDir,
    config.node.secretsDir,
    opts.logSink,
    opts.stateStore,
    opts.templateFiles,
    new RegistryCredentials(config.registries.credentials),
  );
  // A run's container is removed after its outcome is recorded; if that failed (this worker was down, say),
  // it is removed here. Active runs keep theirs: the attempt that resumes them adopts it.
  try {
    const removed = await adapter.removeLeftovers(opts.activeRuns);
    if (removed.length > 0) Runtime.instance().logger.info(`removed what ${removed.length} ended run(s) left on this node`, { runIds: removed });
  } catch (err) {
    Runtime.instance().logger.warn('could not remove what ended runs left on this node; trying again at the next start', { error: String(err) });
  }
  return Worker.create({
    connection: opts.connection,
    namespace: config.temporal.namespace,
    taskQueue: nodeTaskQueue(config.node.id),
    activities: createNodeActivities({ adapter, nodePrivateKeyPem }),
    // Runs are long and mostly waiting; the limit is about how many containers one node should carry.
    maxConcurrentActivityTaskExecutions: 20,
    // A cancel reaches an activity only in the answer to a heartbeat; the SDK otherwise holds heartbeats
    // back for up to 80% of the heartbeat timeout, which would delay every cancel by ~16 s.
    maxHeartbeatThrottleInterval: '1 second',
    shutdownGraceTime: '10 seconds',
  });
}
