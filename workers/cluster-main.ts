/**
 * The cluster worker on its own: `tsx workers/cluster-main.ts` with the configuration in the environment
 * (TEMPORAL_ADDRESS, DATABASE_URL, GLIDERGUN_TASK_QUEUE, GLIDERGUN_DATA_DIR or GLIDERGUN_ENCRYPTION_KEY, …).
 * It runs every deployment workflow and the database activities.
 */
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { loadConfig } from '../core/config.js';
import { migrate } from '../core/db/migrate.js';
import { createPool } from '../core/db/pool.js';
import { createClusterWorker } from './cluster.js';
import { startReconciler } from './reconciler.js';

const config = loadConfig();
if (!config.databaseUrl) throw new Error('DATABASE_URL is required');
Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: ['SIGINT', 'SIGTERM'] });
await migrate(config.databaseUrl);
const db = createPool(config.databaseUrl);
const connection = await NativeConnection.connect({ address: config.temporal.address });
const bundle = process.env.GLIDERGUN_WORKFLOW_BUNDLE;
const { worker, close } = await createClusterWorker({ connection, config, db, workflowBundle: bundle ? { codePath: bundle } : undefined });
process.stderr.write(`[glider-gun] cluster worker polls task queue ${config.temporal.taskQueue}\n`);
const client = new Client({ connection: await Connection.connect({ address: config.temporal.address }), namespace: config.temporal.namespace });
const reconciler = startReconciler(
  { db, temporal: client, taskQueue: config.temporal.taskQueue },
  {
    everyMs: 30_000,
    olderThanSeconds: 60,
    onError: (err) => process.stderr.write(`[glider-gun] reconciling runs failed: ${String(err)}\n`),
    onHanded: (runIds) => process.stderr.write(`[glider-gun] handed ${runIds.length} run(s) no workflow was executing back to their workflows: ${runIds.join(' ')}\n`),
  },
);
await worker.run();
await close();
await reconciler.stop();
await client.connection.close();
await connection.close();
await db.end();
