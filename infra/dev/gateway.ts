/**
 * The node gateway (infra/images/gateway, Go; docs/remote-nodes.md) for the dev stack and the tests: its binary
 * built once per source hash into the cache, the files it reads, and the process itself.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, chmod, mkdir, readFile, readdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { issueServerCertificate, type CertificateAuthority } from '../../core/pki.js';
import { buildOnce, cacheDir } from './cache.js';
import { goEnv } from './images.js';
import { diesWithParent } from './processes.js';
import { say as defaultSay, step, type Say } from './progress.js';

/** The Go module of the gateway. */
export const GATEWAY_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'images', 'gateway');

const exists = (file: string) => access(file).then(() => true, () => false);

/** The gateway binary, built with `go build` into the cache under a hash of its sources (go.mod, go.sum, non-test .go). */
export async function ensureGatewayBinary(out: Say = defaultSay): Promise<string> {
  const files = (await readdir(GATEWAY_DIR)).filter((f) => f === 'go.mod' || f === 'go.sum' || (f.endsWith('.go') && !f.endsWith('_test.go'))).sort();
  const h = createHash('sha256');
  for (const f of files) h.update(f).update('\0').update(await readFile(path.join(GATEWAY_DIR, f))).update('\0');
  const version = h.digest('hex').slice(0, 12);
  const binary = path.join(cacheDir('gateway', version), 'gateway');
  // Test files run in parallel and each may ask: one builds, the others wait for it.
  while (!(await exists(binary))) {
    await buildOnce(
      `${binary}.lock`,
      () =>
        step(`building the gateway (go build, ${version})`, async () => {
          if (await exists(binary)) return;
          await mkdir(path.dirname(binary), { recursive: true });
          const partial = `${binary}.${process.pid}.tmp`;
          await promisify(execFile)('go', ['build', '-trimpath', '-ldflags=-s -w', '-o', partial, '.'], { cwd: GATEWAY_DIR, env: goEnv() }).catch(
            (err: Error & { stderr?: string }) => {
              throw new Error(`go build of ${GATEWAY_DIR} failed (is Go installed?): ${err.stderr?.trim() || err.message}`);
            },
          );
          await rename(partial, binary);
        }, out),
      (owner) => out(`waiting for process ${owner}, which is building the gateway`),
    );
  }
  return binary;
}

export interface GatewayFiles {
  certFile: string;
  keyFile: string;
  clientCaFile: string;
  apiSecretFile: string;
  tokenKeysFile: string;
  /** The secret in apiSecretFile: the API checks it in `X-Glider-Gateway`. */
  apiSecret: string;
  /** The gateway's server certificate (PEM), issued by the node CA: what nodes trust. */
  serverCertPem: string;
}

/** A task-token key: an id 1..255 and 32 random bytes. */
export interface TokenKey {
  id: number;
  key: Buffer;
}

export const newTokenKey = (id: number): TokenKey => ({ id, key: randomBytes(32) });

/** GATEWAY_TOKEN_KEYS_FILE: the first key signs, the second is still accepted (the one before a rotation). */
export async function writeTokenKeys(file: string, keys: TokenKey[]): Promise<void> {
  await writeFile(file, keys.map((k) => `${k.id} ${k.key.toString('base64')}\n`).join(''), { mode: 0o600 });
  await chmod(file, 0o600);
}

/**
 * The files a gateway reads, under dir: a server certificate from the node CA for the names nodes dial
 * (localhost and 127.0.0.1 unless told), the CA as the client CA, a fresh API secret and one token key.
 */
export async function writeGatewayFiles(
  dir: string,
  ca: CertificateAuthority,
  opts: { dnsNames?: string[]; ipAddresses?: string[]; tokenKeys?: TokenKey[] } = {},
): Promise<GatewayFiles> {
  await mkdir(dir, { recursive: true });
  const server = await issueServerCertificate(ca, { dnsNames: opts.dnsNames ?? ['localhost'], ipAddresses: opts.ipAddresses ?? ['127.0.0.1'] });
  const files = {
    certFile: path.join(dir, 'gateway.pem'),
    keyFile: path.join(dir, 'gateway.key'),
    clientCaFile: path.join(dir, 'node-ca.pem'),
    apiSecretFile: path.join(dir, 'api-secret'),
    tokenKeysFile: path.join(dir, 'token-keys'),
  };
  const apiSecret = randomBytes(32).toString('base64url');
  await writeFile(files.certFile, server.certPem);
  await writeFile(files.keyFile, server.keyPem, { mode: 0o600 });
  await writeFile(files.clientCaFile, ca.certPem);
  await writeFile(files.apiSecretFile, apiSecret, { mode: 0o600 });
  await writeTokenKeys(files.tokenKeysFile, opts.tokenKeys ?? [newTokenKey(1)]);
  return { ...files, apiSecret, serverCertPem: server.certPem };
}

/** One JSON line the gateway printed: `msg` and, for refusals, `node`, `method`, `reason`. */
export interface GatewayLogLine {
  msg: string;
  node?: string;
  method?: string;
  reason?: string;
  [key: string]: unknown;
}

export interface Gateway {
  /** host:port of its one TLS listener (gRPC and HTTPS). */
  address: string;
  /** Every JSON line it printed so far. */
  logs(): GatewayLogLine[];
  /** SIGTERM: calls in flight get their grace (15 s), then it exits. */
  stop(): Promise<void>;
  kill(): Promise<void>;
}

export interface GatewayOptions {
  binary: string;
  /** host:port (default 127.0.0.1:0, any free port). */
  listen?: string;
  certFile: string;
  keyFile: string;
  clientCaFile: string;
  temporalAddress: string;
  namespace?: string;
  apiUrl: string;
  apiSecretFile: string;
  tokenKeysFile: string;
  /** More variables, e.g. GATEWAY_NODE_RPS. */
  env?: Record<string, string>;
  /** Hears each JSON line as it is printed (refusals are the audit trail). */
  onLog?: (line: GatewayLogLine) => void;
  startTimeoutMs?: number;
}

/** Starts a gateway and waits for its `listening` line (the error carries what it printed otherwise). */
export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const env = {
    PATH: process.env.PATH ?? '',
    GATEWAY_LISTEN: opts.listen ?? '127.0.0.1:0',
    GATEWAY_TLS_CERT: opts.certFile,
    GATEWAY_TLS_KEY: opts.keyFile,
    GATEWAY_CLIENT_CA: opts.clientCaFile,
    GATEWAY_TEMPORAL_ADDRESS: opts.temporalAddress,
    GATEWAY_TEMPORAL_NAMESPACE: opts.namespace ?? 'default',
    GATEWAY_API_URL: opts.apiUrl,
    GATEWAY_API_SECRET_FILE: opts.apiSecretFile,
    GATEWAY_TOKEN_KEYS_FILE: opts.tokenKeysFile,
    ...opts.env,
  };
  // The kernel ends the gateway if this process dies without stopping it: no orphan on the port.
  const cmd = diesWithParent(opts.binary, []);
  const child: ChildProcess = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const lines: GatewayLogLine[] = [];
  let output = '';
  let rest = '';
  let onListening: ((address: string) => void) | undefined;
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    output = (output + chunk).slice(-8000);
    const parts = (rest + chunk).split('\n');
    rest = parts.pop() ?? '';
    for (const part of parts) {
      try {
        const line = JSON.parse(part) as GatewayLogLine;
        lines.push(line);
        opts.onLog?.(line);
        if (line.msg === 'listening' && typeof line.address === 'string') onListening?.(line.address);
      } catch {
        lines.push({ msg: 'unparsed', text: part });
      }
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    output = (output + chunk).slice(-8000);
  });
  let exited: number | null | undefined;
  const exit = new Promise<void>((resolve) =>
    child.on('exit', (code, signal) => {
      exited = code ?? (signal ? -1 : null);
      resolve();
    }),
  );

  const timeoutMs = opts.startTimeoutMs ?? 15_000;
  let timer: NodeJS.Timeout | undefined;
  const address = await new Promise<string>((resolve, reject) => {
    onListening = resolve;
    child.on('error', (err) => reject(new Error(`the gateway (${opts.binary}) could not start: ${err.message}`)));
    void exit.then(() => reject(new Error(`the gateway exited with ${exited} before listening:\n${output}`)));
    timer = setTimeout(() => reject(new Error(`the gateway did not listen within ${timeoutMs / 1000}s:\n${output}`)), timeoutMs);
  }).catch(async (err: unknown) => {
    child.kill('SIGKILL');
    await exit;
    throw err;
  }).finally(() => clearTimeout(timer));

  const end = async (signal: NodeJS.Signals, killAfterMs: number) => {
    if (exited !== undefined) return;
    child.kill(signal);
    const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    await exit;
    clearTimeout(killer);
  };
  return {
    address,
    logs: () => [...lines],
    stop: () => end('SIGTERM', 20_000),
    kill: () => end('SIGKILL', 5_000),
  };
}
