/**
 * A node worker on its own: `npm run node-worker` (`tsx workers/node-main.ts`) with the configuration in the
 * environment (GLIDERGUN_NODE_ID, TEMPORAL_ADDRESS, DATABASE_URL, GLIDERGUN_DATA_DIR, GLIDERGUN_NODE_RUNNER_IMAGE,
 * …). It polls only the task queue `node-<id>` and runs templates in the local Docker engine. This is the
 * built-in node's worker run apart from the rest. Its runners reach the agent API (GLIDERGUN_AGENT_URL)
 * through the worker's relay; it reads their reports from Postgres.
 */
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { loadConfig } from '../core/config.js';
import { compose } from './compose.js';
import { nodeTaskQueue } from './node.js';
import { runUntilSignalled, say } from './run-until-signalled.js';

const config = loadConfig();
// The composition stops the worker itself, in order; the SDK's own signal handling would race it.
Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
await runUntilSignalled(await compose(config, ['node']));
say(`node worker '${config.node.id}' polls task queue ${nodeTaskQueue(config.node.id)}`);
