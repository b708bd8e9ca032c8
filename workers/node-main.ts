/**
 * A node worker on its own: `tsx workers/node-main.ts` with the configuration in the environment
 * (GLIDERGUN_NODE_ID, TEMPORAL_ADDRESS, DATABASE_URL, GLIDERGUN_DATA_DIR, …). It polls only the task queue
 * `node-<id>` and runs templates in the local Docker engine. This is the built-in node's worker run apart
 * from the rest; remote nodes will use HTTP storage instead of DATABASE_URL.
 */
import { NativeConnection, Runtime, DefaultLogger } from '@temporalio/worker';
import { PostgresLogSink } from '../activities/storage/postgres-log-sink.js';
import { PostgresStateStore } from '../activities/storage/postgres-state-store.js';
import { loadConfig } from '../core/config.js';
import { SecretBox } from '../core/crypto.js';
import { createPool } from '../core/db/pool.js';
import { activeRunIds } from '../core/db/runs.js';
import { loadEncryptionKey } from '../core/keys.js';
import { createDockerClient, createNodeWorker } from './node.js';

const config = loadConfig();
if (!config.databaseUrl) throw new Error('DATABASE_URL is required: the built-in node stores logs and state in Postgres');
Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: ['SIGINT', 'SIGTERM'] });
const db = createPool(config.databaseUrl, 4);
const box = new SecretBox(await loadEncryptionKey({ base64: config.security.encryptionKey, file: config.security.encryptionKeyFile }));
const connection = await NativeConnection.connect({ address: config.temporal.address });
const worker = await createNodeWorker({
  connection,
  config,
  docker: createDockerClient(config.docker.host),
  logSink: new PostgresLogSink(db),
  stateStore: new PostgresStateStore(db, box, config.state),
  activeRuns: (runIds) => activeRunIds(db, runIds),
});
process.stderr.write(`[glider-gun] node worker '${config.node.id}' polls task queue node-${config.node.id}\n`);
await worker.run();
await connection.close();
await db.end();
