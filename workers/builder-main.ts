/**
 * The builder worker on its own: `npm run builder-worker` (`tsx workers/builder-main.ts`) with the
 * configuration in the environment (TEMPORAL_ADDRESS, DATABASE_URL, GLIDERGUN_TASK_QUEUE, GLIDERGUN_REGISTRY,
 * DOCKER_HOST, …). It builds template images in its Docker engine and pushes them to the registry; it polls
 * the task queue `<GLIDERGUN_TASK_QUEUE>-builds`.
 */
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { loadConfig } from '../core/config.js';
import { builderTaskQueue } from '../core/domain.js';
import { compose } from './compose.js';
import { runUntilSignalled, say } from './run-until-signalled.js';

const config = loadConfig();
// The composition stops the worker itself, in order; the SDK's own signal handling would race it.
Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
await runUntilSignalled(await compose(config, ['builder']));
say(`builder worker polls task queue ${builderTaskQueue(config.temporal.taskQueue)} and pushes to ${config.builds.registry}`);
