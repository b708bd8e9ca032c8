import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeConnection} from '@temporalio/worker';
import { Worker, type WorkflowBundleOption } from '@temporalio/worker';
import { createRunActivities } from '../activities/runs.js';
import type { Config } from '../core/config.js';
import { SecretBox } from '../core/crypto.js';
import { loadEncryptionKey } from '../core/keys.js';
import type { Db } from '../core/db/pool.js';

export const WORKFLOWS_PATH = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'workflows', 'index.ts');

/**
 * The cluster worker: every deployment workflow and the database activities (and, once it exists,
 * the Kubernetes execution adapter) on the main task queue.
 */
export async function createClusterWorker(opts: {
  connection: NativeConnection;
  config: Config;
  db: Db;
  /** A prebuilt bundle (tests build it once); otherwise the workflows are bundled at start. */
  workflowBundle?: WorkflowBundleOption | undefined;
}): Promise<Worker> {
  const { config } = opts;
  const secrets = new SecretBox(await loadEncryptionKey({ base64: config.security.encryptionKey, file: config.security.encryptionKeyFile }));
  return Worker.create({
    connection: opts.connection,
    namespace: config.temporal.namespace,
    taskQueue: config.temporal.taskQueue,
    ...(opts.workflowBundle ? { workflowBundle: opts.workflowBundle } : { workflowsPath: WORKFLOWS_PATH }),
    activities: createRunActivities({ db: opts.db, runs: config.runs, secrets }),
    shutdownGraceTime: '10 seconds',
  });
}
