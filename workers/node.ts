import { createHmac } from 'node:crypto';
import path from 'node:path';
import type { NativeConnection } from '@temporalio/worker';
import { Runtime, Worker } from '@temporalio/worker';
import Docker from 'dockerode';
import { DockerExecutor } from '../activities/execution/docker.js';
import { installRunner } from '../activities/execution/docker-images.js';
import type { RunAgents } from '../activities/execution/outcome.js';
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
 * It dials out to Temporal (and, for its runners, to the agent API) and accepts no connections.
 */
export async function createNodeWorker(opts: {
  connection: NativeConnection;
  config: Config;
  docker: Docker;
  /** What runners told the agent API: how each run ended. */
  agents: RunAgents;
  /** Which of the given runs are still active: at start, the worker removes what ended runs left on this node. */
  activeRuns: (runIds: readonly string[]) => Promise<ReadonlySet<string>>;
}): Promise<Worker> {
  const { config } = opts;
  if (!config.node.runnerImage) {
    throw new Error('GLIDERGUN_NODE_RUNNER_IMAGE is not set: a node runs every template under the runner of that image (npm run pod-runner-image builds it)');
  }
  const nodePrivateKeyPem = await loadNodeKey(config.node.workDir);
  const credentials = new RegistryCredentials(config.registries.credentials);
  let runner: string;
  try {
    runner = await installRunner(opts.docker, config.node.runnerImage, path.join(config.node.workDir, 'bin'), credentials, (message, fields) => {
      Runtime.instance().logger.info(message, fields);
    });
  } catch (err) {
    throw new Error(`the runner could not be taken from ${config.node.runnerImage}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  // Derived from the node's own key: stable across attempts and restarts, never written anywhere.
  const credentialFor = (runId: string) => `ggr_${createHmac('sha256', nodePrivateKeyPem).update(`run-agent:${runId}`).digest('base64url')}`;
  const adapter = new DockerExecutor(opts.docker, config.node.workDir, config.node.secretsDir, runner, config.node.agentUrl, opts.agents, credentialFor, credentials);
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
