import { createPublicKey } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeConnection } from '@temporalio/worker';
import { Worker, type WorkflowBundleOption } from '@temporalio/worker';
import type { RunAgents } from '../activities/execution/outcome.js';
import { createNodeActivities } from '../activities/node.js';
import { createRunActivities } from '../activities/runs.js';
import { createBuildActivities } from '../activities/templates/build-activities.js';
import type { Config } from '../core/config.js';
import type { SecretBox } from '../core/crypto.js';
import { loadNodeKey } from '../core/keys.js';
import { runGrant } from '../core/run-grant.js';
import type { Db } from '../core/db/pool.js';
import { createKubernetesExecutor } from './kubernetes.js';

export const WORKFLOWS_PATH = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'workflows', 'index.ts');

/**
 * The cluster worker: every deployment workflow and the database activities on the main task queue, and,
 * with Kubernetes configured, the execution activities of the `cluster` target (one Job per run).
 */
export interface ClusterWorker {
  worker: Worker;
  /** Closes what the execution adapter keeps open (its pod watch), once `worker.run()` has returned. */
  close: () => Promise<void>;
}

export async function createClusterWorker(opts: {
  connection: NativeConnection;
  config: Config;
  db: Db;
  secrets: SecretBox;
  /** What runners told the agent API: how the `cluster` target's runs ended. */
  agents: RunAgents;
  /** A prebuilt bundle (tests build it once); otherwise the workflows are bundled at start. */
  workflowBundle?: WorkflowBundleOption | undefined;
}): Promise<ClusterWorker> {
  const { config } = opts;
  let activities: object = { ...createRunActivities({ db: opts.db, runs: config.runs, secrets: opts.secrets }), ...createBuildActivities({ db: opts.db }) };
  let close = () => Promise.resolve();
  if (config.kubernetes.enabled) {
    // The cluster is a target like a node: it takes each run's grant (from Postgres, which it may read) with
    // the run's secrets sealed to its own key.
    const sealingKeyPem = await loadNodeKey(path.join(config.dataDir, 'cluster'));
    const sealingPublicKey = createPublicKey(sealingKeyPem).export({ type: 'spki', format: 'der' }).toString('base64');
    const { db, secrets } = opts;
    const grants = { grant: (runId: string) => runGrant(db, secrets, config.runs, runId, sealingPublicKey) };
    const executor = await createKubernetesExecutor(config, opts.agents);
    close = () => executor.close();
    activities = { ...activities, ...createNodeActivities({ adapter: executor, grants, sealingKeyPem }) };
  }
  const worker = await Worker.create({
    connection: opts.connection,
    namespace: config.temporal.namespace,
    taskQueue: config.temporal.taskQueue,
    ...(opts.workflowBundle ? { workflowBundle: opts.workflowBundle } : { workflowsPath: WORKFLOWS_PATH }),
    activities,
    shutdownGraceTime: '10 seconds',
    // A cancel reaches a running activity only in a heartbeat's answer: the SDK's default throttle (80% of the
    // heartbeat timeout) would hold a Kubernetes run's cancel back by up to 16 s.
    maxHeartbeatThrottleInterval: '1 second',
  });
  return { worker, close };
}
