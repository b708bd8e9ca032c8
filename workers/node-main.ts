/**
 * A remote node (docs/remote-nodes.md): `npm run node-worker` (`tsx workers/node-main.ts`).
 *
 *   npm run node-worker -- enrol --gateway host:port --ca ca.pem --token TOKEN [--dir DIR]
 *       makes this node's keys, enrols it with the one-time token (`POST /v1/nodes` gave it), writes DIR
 *   npm run node-worker [-- --dir DIR]
 *       runs the node: polls its task queue through the gateway and runs templates in the local Docker engine
 *
 * DIR is GLIDERGUN_NODE_DIR, else /var/lib/glider-gun-node. The node needs no database and dials nothing but
 * its gateway; the rest of its settings are in its environment (workers/node-settings.ts).
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { certificateNotAfter } from '../core/pki.js';
import { createDockerClient, startNodeWorker, type NodeLog } from './node.js';
import { enrolNode } from './node-identity.js';
import { DEFAULT_NODE_DIR, loadNodeSettings } from './node-settings.js';

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;

function line(level: keyof typeof LEVELS, message: string, fields?: Record<string, unknown>): void {
  const extra = fields && Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : '';
  process.stderr.write(`${new Date().toISOString()} [glider-gun node] ${level === 'info' ? '' : `${level.toUpperCase()}: `}${message}${extra}\n`);
}

function logger(threshold: keyof typeof LEVELS): NodeLog {
  const at = (level: keyof typeof LEVELS) => (message: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] >= LEVELS[threshold]) line(level, message, fields);
  };
  return { info: at('info'), warn: at('warn'), error: at('error') };
}

const USAGE = `usage:
  npm run node-worker -- enrol --gateway <host:port> --ca <ca.pem> (--token <token> | --token-file <file>) [--dir <dir>]
  npm run node-worker [-- --dir <dir>]
<dir>: GLIDERGUN_NODE_DIR, else ${DEFAULT_NODE_DIR}`;

class UsageError extends Error {}

async function enrol(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { gateway: { type: 'string' }, ca: { type: 'string' }, token: { type: 'string' }, 'token-file': { type: 'string' }, dir: { type: 'string' } },
    strict: true,
  });
  if (!values.gateway || !values.ca || (!values.token && !values['token-file'])) throw new UsageError('enrol needs --gateway, --ca and --token (or --token-file)');
  const token = values.token ?? (await readFile(values['token-file']!, 'utf8')).trim();
  const dir = loadNodeSettingsDir(values.dir);
  const caPem = await readFile(values.ca, 'utf8').catch((err: unknown) => {
    throw new Error(`cannot read the CA certificate ${values.ca}: ${err instanceof Error ? err.message : String(err)}`);
  });
  line('info', `enrolling with the gateway at ${values.gateway} (trusting only the CA in ${values.ca}) ...`);
  const identity = await enrolNode({ gateway: values.gateway, caPem, token, dir });
  line('info', `enrolled as node '${identity.nodeId}' (certificate valid until ${certificateNotAfter(identity.certPem).toISOString()}); its identity is in ${dir}`);
  line('info', `start it with: npm run node-worker -- --dir ${dir}`);
}

/** The identity folder alone: enrolment needs none of the worker's settings (a runner image, say). */
function loadNodeSettingsDir(dir: string | undefined): string {
  return dir ?? process.env.GLIDERGUN_NODE_DIR ?? DEFAULT_NODE_DIR;
}

async function runNode(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { dir: { type: 'string' } }, strict: true });
  const { dir, dockerHost, settings } = loadNodeSettings(process.env, values.dir);
  const threshold = (process.env.GLIDERGUN_LOG_LEVEL ?? 'info') as keyof typeof LEVELS;
  const log = logger(threshold in LEVELS ? threshold : 'info');
  // A node never calls RecordWorkerHeartbeat (its gateway refuses it); the composition stops the worker itself.
  Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [], workerHeartbeatInterval: 0 });
  log.info(`starting the node of ${dir} (work in ${settings.workDir}, secrets in ${settings.secretsDir}, ${settings.capacity} runs at once)`);
  const node = await startNodeWorker({ identityDir: dir, config: settings, docker: createDockerClient(dockerHost), log });
  log.info(`node '${node.nodeId}': connecting ...`);
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      line('warn', `${signal} again: exiting without waiting`);
      process.exit(1);
    }
    signalled = true;
    line('info', `${signal}: stopping (running activities get their grace time; their containers go on and are adopted later)`);
    node.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        line('error', `stopping failed: ${err instanceof Error ? err.message : String(err)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  await node.run;
}

const [command, ...rest] = process.argv.slice(2);
try {
  if (command === 'enrol' || command === 'enroll') await enrol(rest);
  else if (command === 'help' || command === '--help' || command === '-h') process.stdout.write(`${USAGE}\n`);
  else await runNode(command === undefined ? [] : [command, ...rest]);
} catch (err) {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
    line('error', `${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    process.exit(2);
  }
  line('error', err instanceof Error ? err.message : String(err));
  process.exit(1);
}
