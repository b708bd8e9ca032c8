import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { VersionApi } from '@kubernetes/client-node';
import type { Connection } from '@temporalio/client';
import { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type { Express } from 'express';
import type { Logger } from 'pino';
import { registryBaseUrl } from '../activities/registry-auth.js';
import { createApp } from '../api/app.js';
import { ensureAdminToken, type AdminTokenState } from '../core/bootstrap.js';
import type { Config } from '../core/config.js';
import { SecretBox } from '../core/crypto.js';
import { loadEncryptionKey, loadGatewaySecret, loadNodeCa } from '../core/keys.js';
import type { Db } from '../core/db/pool.js';
import type { CertificateAuthority } from '../core/pki.js';
import { loadKubeConfig } from './kubernetes.js';

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

export interface ApiServer {
  url: string;
  app: Express;
  adminToken: AdminTokenState;
  server: http.Server;
  /** The node CA the API signs node certificates with. */
  nodeCa: CertificateAuthority;
  close(): Promise<void>;
}

/** The HTTP API: the app on the process's Temporal client and Postgres pool, with health probes of what it depends on. */
export async function startApiServer(opts: {
  config: Config;
  db: Db;
  connection: Connection;
  docker?: Docker | undefined;
  log: Logger;
  port?: number;
  /** The process's own client and key box (workers/compose.ts); made here for a test that starts an API of its own. */
  temporal?: Client;
  secrets?: SecretBox;
}): Promise<ApiServer> {
  const { config, db, connection } = opts;
  const temporal = opts.temporal ?? new Client({ connection, namespace: config.temporal.namespace });
  const probes: Record<string, () => Promise<void>> = {
    postgres: async () => {
      await db.query('SELECT 1');
    },
    temporal: async () => {
      await connection.healthService.check({});
    },
  };
  const docker = opts.docker;
  if (docker) {
    probes.docker = async () => {
      await docker.ping();
    };
  }
  if (config.kubernetes.enabled) {
    // /version answers any authenticated caller: it needs nothing of the worker's Role.
    const version = loadKubeConfig(config.kubernetes).makeApiClient(VersionApi);
    probes.kubernetes = async () => {
      await version.getCode();
    };
  }
  const registry = config.builds.registry;
  if (registry) {
    // Reachable is enough here: 401 is a registry asking for the credentials builds push with.
    const url = `${registryBaseUrl(registry.split('/')[0]!, config.registries.insecure)}/v2/`;
    probes.registry = async () => {
      const res = await fetch(url, { signal: AbortSignal.timeout(3_000) });
      if (res.status >= 500) throw new Error(`${url} answered ${res.status}`);
    };
  }
  const secrets = opts.secrets ?? new SecretBox(await loadEncryptionKey({ base64: config.security.encryptionKey, file: config.security.encryptionKeyFile }));
  const adminToken = await ensureAdminToken(db, config.security.adminTokenFile);
  const nodes = {
    ca: await loadNodeCa({ files: config.nodes.ca, defaultFile: config.nodes.caFile }),
    gatewaySecret: await loadGatewaySecret(config.nodes.gatewaySecretFile),
    gatewayAddress: config.nodes.gatewayAddress,
    enrolmentSeconds: config.nodes.enrolmentSeconds,
    certificateDays: config.nodes.certificateDays,
    runs: config.runs,
  };
  const app = createApp({
    db,
    temporal,
    taskQueue: config.temporal.taskQueue,
    kubernetesEnabled: config.kubernetes.enabled,
    maxRunTimeoutSeconds: config.runs.maxTimeoutSeconds,
    state: config.state,
    logMaxBytes: config.runs.logMaxBytes,
    builds: config.builds,
    secrets,
    probes,
    log: opts.log,
    version: VERSION,
    nodes,
  });
  const server = http.createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? config.api.port, config.api.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${config.api.host}:${port}`,
    app,
    adminToken,
    server,
    nodeCa: nodes.ca,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
