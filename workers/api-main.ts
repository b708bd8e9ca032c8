/**
 * The HTTP API on its own: `npm run api` (`tsx workers/api-main.ts`) with the configuration in the environment
 * (DATABASE_URL, TEMPORAL_ADDRESS, GLIDERGUN_TASK_QUEUE, GLIDERGUN_API_HOST/PORT, GLIDERGUN_DATA_DIR or
 * GLIDERGUN_ENCRYPTION_KEY, …). It accepts requests and hands runs to the workflows that the cluster worker
 * executes; it runs no worker of its own, so it installs no worker runtime.
 */
import { loadConfig } from '../core/config.js';
import { compose } from './compose.js';
import { runUntilSignalled, say } from './run-until-signalled.js';

const config = loadConfig();
// Migrations take a lock: an API and a cluster worker starting together apply them once.
const composed = await compose(config, ['api'], { migrate: true });
await runUntilSignalled(composed);
const { api } = composed;
if (api) {
  say(`API listens on ${api.url}`);
  if (api.adminToken.state === 'elsewhere') say(`no admin token in ${config.security.adminTokenFile}: use an admin token you already have`);
  else say(`admin token in ${api.adminToken.file}${api.adminToken.state === 'created' ? ' (new)' : ''}`);
}
