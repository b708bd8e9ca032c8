/**
 * A remote node as its own process (`npm run node-worker`, docs/remote-nodes.md) and a gateway of a test's
 * own in front of a test system, for tests that put the two where they like (another address, another
 * network namespace) and stop, kill or cut them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { issueServerCertificate } from '../../core/pki.js';
import { ensureGatewayBinary, startGateway, type Gateway } from '../../infra/dev/gateway.js';
import type { IsolatedNetwork } from './netns.js';
import { env, eventually, type TestSystem } from './system.js';

export const NODE_MAIN = path.join(import.meta.dirname, '..', '..', 'workers', 'node-main.ts');

export interface NodeProcess {
  child: ChildProcess;
  /** Every line it printed (stdout and stderr), as they come. */
  lines: string[];
  exited: Promise<number | null>;
  /** Until a line from index `from` on matches. */
  saidSince(from: number, pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGTERM (SIGKILL after 20 s), and its exit code. */
  stop(): Promise<number | null>;
}

/**
 * `npm run node-worker -- …` as its own process: node with tsx, so the pid is the node's own (also inside
 * a namespace: `ip netns exec` execs the command).
 */
export function nodeWorker(args: string[], environment: NodeJS.ProcessEnv, opts: { network?: IsolatedNetwork } = {}): NodeProcess {
  const argv = ['--import', 'tsx', NODE_MAIN, ...args];
  const options = { env: environment, stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'] };
  const child = opts.network ? opts.network.spawn(process.execPath, argv, options) : spawn(process.execPath, argv, options);
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream?.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop() ?? '';
      lines.push(...parts);
    });
  }
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    lines,
    exited,
    saidSince: (from, pattern, timeoutMs = 60_000) =>
      eventually(`the node to say ${pattern}`, () => Promise.resolve(lines.slice(from).find((l) => pattern.test(l))), timeoutMs),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(killer);
      return code;
    },
  };
}

/** Only what a node has: no DATABASE_URL, no TEMPORAL_ADDRESS, no API address. */
export function remoteNodeEnv(secretsDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ...(process.env.DOCKER_HOST ? { DOCKER_HOST: process.env.DOCKER_HOST } : {}),
    GLIDERGUN_NODE_RUNNER_IMAGE: env('GG_TEST_NODE_RUNNER_IMAGE'),
    GLIDERGUN_SECRETS_DIR: secretsDir,
    GLIDERGUN_NODE_SHUTDOWN_GRACE_SECONDS: '2',
    ...extra,
  };
}

/**
 * A gateway of the test's own in front of `sys` (its API, its Temporal, its API secret and task-token keys),
 * listening on `listen` (`ip:port`, port 0 for any), with a server certificate from the system's node CA for
 * that IP. Its files go in `dir`; start it again on the same address with the same call.
 */
export async function startOwnGateway(sys: TestSystem, listen: string, dir: string): Promise<Gateway> {
  const host = listen.slice(0, listen.lastIndexOf(':'));
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const server = await issueServerCertificate(sys.api.nodeCa, { dnsNames: ['localhost'], ipAddresses: [host] });
  const files = { ca: path.join(dir, 'node-ca.pem'), cert: path.join(dir, 'gateway.pem'), key: path.join(dir, 'gateway.key') };
  await writeFile(files.ca, sys.api.nodeCa.certPem);
  await writeFile(files.cert, server.certPem);
  await writeFile(files.key, server.keyPem, { mode: 0o600 });
  return startGateway({
    binary: await ensureGatewayBinary(),
    listen,
    certFile: files.cert,
    keyFile: files.key,
    clientCaFile: files.ca,
    temporalAddress: sys.config.temporal.address,
    namespace: sys.config.temporal.namespace,
    apiUrl: sys.api.url,
    apiSecretFile: sys.config.nodes.gatewaySecretFile,
    tokenKeysFile: sys.config.nodes.gatewayTokenKeysFile,
  });
}

/**
 * Creates a node through the API (`POST /v1/nodes`) and enrols it with `npm run node-worker -- enrol`
 * through `gateway` (host:port), trusting only the CA the API gave, into `dir`; in `network` if given.
 */
export async function createAndEnrolNode(
  sys: TestSystem,
  opts: { name: string; gateway: string; dir: string; environment: NodeJS.ProcessEnv; network?: IsolatedNetwork },
): Promise<string> {
  const created = await sys.call<{ node: { id: string }; enrolment: { token: string; caCertificate: string } }>('POST', '/v1/nodes', { name: opts.name });
  if (created.status !== 201) throw new Error(`node not created: ${JSON.stringify(created.body)}`);
  await mkdir(opts.dir, { recursive: true });
  const caFile = path.join(opts.dir, 'given-ca.pem');
  await writeFile(caFile, created.body.enrolment.caCertificate);
  const enrol = nodeWorker(
    ['enrol', '--gateway', opts.gateway, '--ca', caFile, '--token', created.body.enrolment.token, '--dir', path.join(opts.dir, 'id')],
    opts.environment,
    opts.network ? { network: opts.network } : {},
  );
  const code = await enrol.exited;
  if (code !== 0) throw new Error(`enrolment failed (${code}):\n${enrol.lines.join('\n')}`);
  return created.body.node.id;
}
