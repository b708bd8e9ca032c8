/**
 * The cluster worker on its own: `npm run cluster-worker` (`tsx workers/cluster-main.ts`) with the
 * configuration in the environment (TEMPORAL_ADDRESS, DATABASE_URL, GLIDERGUN_TASK_QUEUE, GLIDERGUN_DATA_DIR or
 * GLIDERGUN_ENCRYPTION_KEY, …). It runs every deployment workflow and the database activities, the `cluster`
 * target's runs when Kubernetes is configured, and the run reconciler.
 */
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { loadConfig } from '../core/config.js';
import { compose } from './compose.js';
import { runUntilSignalled, say } from './run-until-signalled.js';

const config = loadConfig();
// The composition stops the worker and the reconciler itself, in order; the SDK's own signal handling would race it.
Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
const bundle = process.env.GLIDERGUN_WORKFLOW_BUNDLE;
await runUntilSignalled(await compose(config, ['cluster'], { migrate: true, workflowBundle: bundle ? { codePath: bundle } : undefined }));
say(`cluster worker polls task queue ${config.temporal.taskQueue}`);
