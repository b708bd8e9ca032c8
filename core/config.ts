import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { parseDockerConfig, registryHostOf, type RegistryAuth } from './registry-credentials.js';

/**
 * The one typed configuration of every Glider Gun process, read from the environment once at start-up.
 * Defaults are for a single machine running the dev stack; anything wrong fails fast with every problem listed.
 */
const booleanFromEnv = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const ConfigSchema = z.object({
  GLIDERGUN_DATA_DIR: z.string().min(1).default('.gg-data'),
  DATABASE_URL: z.string().url().optional(),
  /** Unset: the dev stack runs its own Temporal dev server on GLIDERGUN_TEMPORAL_PORT. */
  TEMPORAL_ADDRESS: z.string().min(1).optional(),
  GLIDERGUN_TEMPORAL_PORT: z.coerce.number().int().min(1).max(65535).default(7233),
  GLIDERGUN_EMBEDDED_PG_PORT: z.coerce.number().int().min(1).max(65535).default(54329),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_UI_PORT: z.coerce.number().int().min(1).max(65535).default(8233),
  GLIDERGUN_TASK_QUEUE: z.string().min(1).default('glider-gun'),
  GLIDERGUN_API_HOST: z.string().min(1).default('127.0.0.1'),
  GLIDERGUN_API_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  GLIDERGUN_NODE_ID: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$/).default('local'),
  DOCKER_HOST: z.string().optional(),
  GLIDERGUN_KUBERNETES: booleanFromEnv.default(false),
  /** Unset: the in-cluster ServiceAccount when running in a pod, else the default kubeconfig. */
  GLIDERGUN_KUBECONFIG: z.string().min(1).optional(),
  GLIDERGUN_KUBERNETES_NAMESPACE: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/).default('glider-gun-runs'),
  /** Where pods reach the agent API (the pod-runner calls back here). Unset: the API's own address. */
  GLIDERGUN_KUBERNETES_AGENT_URL: z.string().url().optional(),
  GLIDERGUN_KUBERNETES_RUNNER_IMAGE: z.string().min(1).optional(),
  /** The pod-runner image a node worker takes its runner from (infra/images/pod-runner); pulled if the engine lacks it. */
  GLIDERGUN_NODE_RUNNER_IMAGE: z.string().min(1).optional(),
  GLIDERGUN_KUBERNETES_SCHEDULE_TIMEOUT_SECONDS: z.coerce.number().int().min(1).default(300),
  GLIDERGUN_KUBERNETES_PULL_TIMEOUT_SECONDS: z.coerce.number().int().min(1).default(120),
  /** Secrets (type kubernetes.io/dockerconfigjson) in the runs' namespace that the kubelet pulls template images with. */
  /** A YAML or JSON file of what every run's pod gets besides the contract's own (activities/execution/kubernetes/pod-template.ts). */
  GLIDERGUN_KUBERNETES_POD_TEMPLATE: z.string().min(1).optional(),
  GLIDERGUN_KUBERNETES_IMAGE_PULL_SECRETS: z
    .string()
    .regex(/^\s*([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\s*(,\s*|$))*$/, 'must be a comma-separated list of Secret names')
    .default(''),
  /** Where template builds push images: `<host[:port]>/<path>`. Unset: builds are refused (BUILDS_UNAVAILABLE). */
  GLIDERGUN_REGISTRY: z.string().regex(/^[a-z0-9][a-z0-9.-]*(:\d+)?(\/[a-z0-9._-]+)*$/, 'must be <host[:port]>/<path>').optional(),
  GLIDERGUN_REGISTRY_USERNAME: z.string().optional(),
  GLIDERGUN_REGISTRY_PASSWORD: z.string().optional(),
  /** A Docker config file (`{"auths": {...}}`) with the credentials of the registries template images are pulled from. */
  GLIDERGUN_REGISTRY_AUTH_FILE: z.string().min(1).optional(),
  GLIDERGUN_BUILD_TIMEOUT_SECONDS: z.coerce.number().int().min(10).default(1800),
  /** Uploaded .zip/.tgz sources, compressed. */
  GLIDERGUN_TEMPLATE_UPLOAD_MAX_BYTES: z.coerce.number().int().min(1024).default(50 * 1024 * 1024),
  /** Lets builds clone file:// URLs (a repository on the builder's own disk): off, as it reads local files. */
  GLIDERGUN_GIT_ALLOW_FILE_URLS: booleanFromEnv.default(false),
  /** Registries read over plain HTTP (comma-separated host:port), besides localhost. */
  GLIDERGUN_INSECURE_REGISTRIES: z.string().default(''),
  GLIDERGUN_RUN_TIMEOUT_SECONDS: z.coerce.number().int().min(1).default(3600),
  GLIDERGUN_RUN_TIMEOUT_MAX_SECONDS: z.coerce.number().int().min(1).default(24 * 3600),
  /** Per run and stream: what a template prints beyond this is not stored (a marker says where it was cut). */
  GLIDERGUN_LOG_MAX_BYTES: z.coerce.number().int().min(1024).default(64 * 1024 * 1024),
  /** How many state versions each deployment keeps (the newest); older ones are deleted with their data. */
  GLIDERGUN_STATE_VERSIONS_KEPT: z.coerce.number().int().min(1).default(50),
  /** The largest /state archive (compressed) a deployment may store, MiB; a deployment or template version may set its own. */
  GLIDERGUN_STATE_MAX_MB: z.coerce.number().int().min(1).default(4096),
  GLIDERGUN_STOP_GRACE_SECONDS: z.coerce.number().int().min(0).max(3600).default(10),
  GLIDERGUN_NODE_WAIT_SECONDS: z.coerce.number().int().min(1).default(600),
  /** 32 bytes, base64. Unset: generated at first start into <data dir>/encryption-key. */
  GLIDERGUN_ENCRYPTION_KEY: z.string().min(1).optional(),
  /** Where a node writes each run's secrets file; must be a memory file system (tmpfs). */
  GLIDERGUN_SECRETS_DIR: z.string().min(1).default('/dev/shm/glider-gun'),
  /** The node CA (PEM files, both or neither). Unset: generated at first start into <data dir>/pki/node-ca.pem. */
  GLIDERGUN_NODE_CA_CERT_FILE: z.string().min(1).optional(),
  GLIDERGUN_NODE_CA_KEY_FILE: z.string().min(1).optional(),
  /** The secret the gateway presents to the API. Unset: generated at first start into <data dir>/pki/gateway-secret. */
  GLIDERGUN_GATEWAY_SECRET_FILE: z.string().min(1).optional(),
  /** Where nodes dial the gateway (host:port): told to a node when it is created. */
  GLIDERGUN_GATEWAY_ADDRESS: z.string().regex(/^[^\s/]+:\d+$/, 'must be host:port').optional(),
  /** Where the dev stack's gateway listens. */
  GLIDERGUN_GATEWAY_PORT: z.coerce.number().int().min(0).max(65535).default(7443),
  GLIDERGUN_NODE_ENROLMENT_SECONDS: z.coerce.number().int().min(60).max(7 * 86400).default(3600),
  GLIDERGUN_NODE_CERTIFICATE_DAYS: z.coerce.number().int().min(1).max(365).default(30),
  GLIDERGUN_LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
});

export interface StatePolicy {
  versionsKept: number;
  maxMb: number;
}

export interface Config {
  dataDir: string;
  /** Unset means "the dev stack runs an embedded Postgres". */
  databaseUrl: string | undefined;
  temporal: { address: string; namespace: string; uiPort: number; taskQueue: string };
  /** Where the dev stack (npm start) runs the services it starts itself. */
  devStack: { startTemporal: boolean; temporalPort: number; postgresPort: number };
  api: { host: string; port: number };
  /**
   * `runnerImage`: where the runner every Docker run wraps its template with comes from (required to run).
   * The built-in node's runners reach the agent API through the gateway, like any node's.
   */
  node: { id: string; workDir: string; secretsDir: string; runnerImage: string | undefined };
  security: { encryptionKey: string | undefined; encryptionKeyFile: string; adminTokenFile: string };
  /**
   * Node identity (docs/remote-nodes.md): `ca` is the node CA's files from configuration, else `caFile` (cert
   * and key in one file) is made at first start; `gatewaySecretFile` likewise.
   */
  nodes: {
    ca: { certFile: string; keyFile: string } | undefined;
    caFile: string;
    gatewaySecretFile: string;
    gatewayTokenKeysFile: string;
    gatewayAddress: string;
    gatewayPort: number;
    enrolmentSeconds: number;
    certificateDays: number;
  };
  docker: { host: string | undefined };
  kubernetes: {
    enabled: boolean;
    kubeconfig: string | undefined;
    namespace: string;
    agentUrl: string;
    runnerImage: string | undefined;
    scheduleTimeoutSeconds: number;
    pullTimeoutSeconds: number;
    imagePullSecrets: string[];
    podTemplateFile: string | undefined;
  };
  /** `credentials`: what images are pulled and inspected with, by registry (the build registry's first). */
  registries: { insecure: string[]; credentials: RegistryAuth[] };
  builds: {
    registry: string | undefined;
    timeoutSeconds: number;
    uploadMaxBytes: number;
    allowFileGitUrls: boolean;
  };
  runs: { timeoutSeconds: number; maxTimeoutSeconds: number; stopGraceSeconds: number; nodeWaitSeconds: number; logMaxBytes: number };
  /** How state versions are kept: how many per deployment, and how large one may be unless set per deployment. */
  state: StatePolicy;
  logLevel: z.infer<typeof ConfigSchema>['GLIDERGUN_LOG_LEVEL'];
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = ConfigSchema.safeParse(
    Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== '')),
  );
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  const e = parsed.data;
  if (!e.GLIDERGUN_NODE_CA_CERT_FILE !== !e.GLIDERGUN_NODE_CA_KEY_FILE) {
    throw new ConfigError(['GLIDERGUN_NODE_CA_CERT_FILE and GLIDERGUN_NODE_CA_KEY_FILE: give both (the node CA from configuration) or neither (one is made at first start)']);
  }
  if (e.GLIDERGUN_KUBERNETES && !e.GLIDERGUN_KUBERNETES_RUNNER_IMAGE) {
    throw new ConfigError(['GLIDERGUN_KUBERNETES_RUNNER_IMAGE: required with GLIDERGUN_KUBERNETES=true (the pod-runner image, infra/images/pod-runner)']);
  }
  const dataDir = path.resolve(e.GLIDERGUN_DATA_DIR);
  const credentials: RegistryAuth[] = [];
  // The build registry's push credentials first: they are also what its images are pulled with.
  if (e.GLIDERGUN_REGISTRY && e.GLIDERGUN_REGISTRY_USERNAME && e.GLIDERGUN_REGISTRY_PASSWORD) {
    credentials.push({ username: e.GLIDERGUN_REGISTRY_USERNAME, password: e.GLIDERGUN_REGISTRY_PASSWORD, serveraddress: registryHostOf(e.GLIDERGUN_REGISTRY) });
  }
  if (e.GLIDERGUN_REGISTRY_AUTH_FILE) {
    try {
      credentials.push(...parseDockerConfig(readFileSync(e.GLIDERGUN_REGISTRY_AUTH_FILE, 'utf8')));
    } catch (err) {
      throw new ConfigError([`GLIDERGUN_REGISTRY_AUTH_FILE: ${e.GLIDERGUN_REGISTRY_AUTH_FILE}: ${err instanceof Error ? err.message : String(err)}`]);
    }
  }
  return {
    dataDir,
    databaseUrl: e.DATABASE_URL,
    temporal: {
      address: e.TEMPORAL_ADDRESS ?? `127.0.0.1:${e.GLIDERGUN_TEMPORAL_PORT}`,
      namespace: e.TEMPORAL_NAMESPACE,
      uiPort: e.TEMPORAL_UI_PORT,
      taskQueue: e.GLIDERGUN_TASK_QUEUE,
    },
    devStack: {
      startTemporal: e.TEMPORAL_ADDRESS === undefined,
      temporalPort: e.GLIDERGUN_TEMPORAL_PORT,
      postgresPort: e.GLIDERGUN_EMBEDDED_PG_PORT,
    },
    api: { host: e.GLIDERGUN_API_HOST, port: e.GLIDERGUN_API_PORT },
    node: {
      id: e.GLIDERGUN_NODE_ID,
      workDir: path.join(dataDir, 'node', e.GLIDERGUN_NODE_ID),
      secretsDir: path.join(e.GLIDERGUN_SECRETS_DIR, e.GLIDERGUN_NODE_ID),
      runnerImage: e.GLIDERGUN_NODE_RUNNER_IMAGE,
    },
    security: {
      encryptionKey: e.GLIDERGUN_ENCRYPTION_KEY,
      encryptionKeyFile: path.join(dataDir, 'encryption-key'),
      adminTokenFile: path.join(dataDir, 'admin-token'),
    },
    nodes: {
      ca: e.GLIDERGUN_NODE_CA_CERT_FILE && e.GLIDERGUN_NODE_CA_KEY_FILE ? { certFile: e.GLIDERGUN_NODE_CA_CERT_FILE, keyFile: e.GLIDERGUN_NODE_CA_KEY_FILE } : undefined,
      caFile: path.join(dataDir, 'pki', 'node-ca.pem'),
      gatewaySecretFile: e.GLIDERGUN_GATEWAY_SECRET_FILE ?? path.join(dataDir, 'pki', 'gateway-secret'),
      gatewayTokenKeysFile: path.join(dataDir, 'pki', 'gateway-token-keys'),
      gatewayAddress: e.GLIDERGUN_GATEWAY_ADDRESS ?? `127.0.0.1:${e.GLIDERGUN_GATEWAY_PORT}`,
      gatewayPort: e.GLIDERGUN_GATEWAY_PORT,
      enrolmentSeconds: e.GLIDERGUN_NODE_ENROLMENT_SECONDS,
      certificateDays: e.GLIDERGUN_NODE_CERTIFICATE_DAYS,
    },
    docker: { host: e.DOCKER_HOST },
    kubernetes: {
      enabled: e.GLIDERGUN_KUBERNETES,
      kubeconfig: e.GLIDERGUN_KUBECONFIG,
      namespace: e.GLIDERGUN_KUBERNETES_NAMESPACE,
      agentUrl: e.GLIDERGUN_KUBERNETES_AGENT_URL ?? `http://${e.GLIDERGUN_API_HOST}:${e.GLIDERGUN_API_PORT}`,
      runnerImage: e.GLIDERGUN_KUBERNETES_RUNNER_IMAGE,
      scheduleTimeoutSeconds: e.GLIDERGUN_KUBERNETES_SCHEDULE_TIMEOUT_SECONDS,
      pullTimeoutSeconds: e.GLIDERGUN_KUBERNETES_PULL_TIMEOUT_SECONDS,
      imagePullSecrets: e.GLIDERGUN_KUBERNETES_IMAGE_PULL_SECRETS.split(',').map((s) => s.trim()).filter(Boolean),
      podTemplateFile: e.GLIDERGUN_KUBERNETES_POD_TEMPLATE,
    },
    registries: { insecure: e.GLIDERGUN_INSECURE_REGISTRIES.split(',').map((r) => r.trim()).filter(Boolean), credentials },
    builds: {
      registry: e.GLIDERGUN_REGISTRY,
      timeoutSeconds: e.GLIDERGUN_BUILD_TIMEOUT_SECONDS,
      uploadMaxBytes: e.GLIDERGUN_TEMPLATE_UPLOAD_MAX_BYTES,
      allowFileGitUrls: e.GLIDERGUN_GIT_ALLOW_FILE_URLS,
    },
    runs: {
      timeoutSeconds: Math.min(e.GLIDERGUN_RUN_TIMEOUT_SECONDS, e.GLIDERGUN_RUN_TIMEOUT_MAX_SECONDS),
      maxTimeoutSeconds: e.GLIDERGUN_RUN_TIMEOUT_MAX_SECONDS,
      stopGraceSeconds: e.GLIDERGUN_STOP_GRACE_SECONDS,
      nodeWaitSeconds: e.GLIDERGUN_NODE_WAIT_SECONDS,
      logMaxBytes: e.GLIDERGUN_LOG_MAX_BYTES,
    },
    state: { versionsKept: e.GLIDERGUN_STATE_VERSIONS_KEPT, maxMb: e.GLIDERGUN_STATE_MAX_MB },
    logLevel: e.GLIDERGUN_LOG_LEVEL,
  };
}
