import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../core/config.js';
import { loadGatewaySecret, loadGatewayTokenKeys } from '../core/keys.js';
import { issueServerCertificate, type CertificateAuthority } from '../core/pki.js';
import type { Logger } from 'pino';
import { ensureGatewayBinary, startGateway, type GatewayLogLine } from '../infra/dev/gateway.js';

export interface Gateway {
  /** host:port nodes dial. */
  readonly address: string;
  stop(): Promise<void>;
}

const isIp = (host: string) => /^[\d.]+$/.test(host) || host.includes(':');

/** The gateway's lines into this process's log: refusals as warnings, connections at debug. */
function gatewayLog(log: Logger): (line: GatewayLogLine) => void {
  const gateway = log.child({ component: 'gateway' });
  return ({ msg, ...fields }) => {
    if (msg === 'refused') gateway.warn(fields, 'the gateway refused a node\'s call');
    else if (msg === 'connected' || msg === 'disconnected') gateway.debug(fields, msg);
    else gateway.info(fields, msg);
  };
}

/**
 * The node gateway (infra/images/gateway) as a child of this process, in front of its API and Temporal: the
 * dev stack's and the tests' way to run one. Its server certificate is made here with the node CA, for the
 * address it listens on; the secret and the task-token keys are the installation's (made at first start).
 */
export async function startGatewayProcess(opts: {
  config: Config;
  ca: CertificateAuthority;
  apiUrl: string;
  listen: string;
  /** Where its lines go: every refusal is one (the audit trail), with the node and the method. */
  log?: Logger | undefined;
}): Promise<Gateway> {
  const { config } = opts;
  const dir = path.join(config.dataDir, 'pki', 'gateway');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const host = opts.listen.slice(0, opts.listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  const names = ['localhost', ...(isIp(host) || host === '' ? [] : [host])];
  const addresses = ['127.0.0.1', ...(isIp(host) && host !== '127.0.0.1' && host !== '0.0.0.0' ? [host] : [])];
  const server = await issueServerCertificate(opts.ca, { dnsNames: names, ipAddresses: addresses });
  const files = { ca: path.join(dir, 'node-ca.crt'), cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') };
  await writeFile(files.ca, opts.ca.certPem, { mode: 0o644 });
  await writeFile(files.cert, server.certPem, { mode: 0o644 });
  await writeFile(files.key, server.keyPem, { mode: 0o600 });
  await loadGatewaySecret(config.nodes.gatewaySecretFile);
  await loadGatewayTokenKeys(config.nodes.gatewayTokenKeysFile);
  const gateway = await startGateway({
    binary: await ensureGatewayBinary(),
    listen: opts.listen,
    certFile: files.cert,
    keyFile: files.key,
    clientCaFile: files.ca,
    temporalAddress: config.temporal.address,
    namespace: config.temporal.namespace,
    apiUrl: opts.apiUrl,
    apiSecretFile: config.nodes.gatewaySecretFile,
    tokenKeysFile: config.nodes.gatewayTokenKeysFile,
    ...(opts.log ? { onLog: gatewayLog(opts.log) } : {}),
  });
  return { address: gateway.address, stop: () => gateway.stop() };
}
