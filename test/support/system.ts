/**
 * One Glider Gun per test file, on the services that test/run.ts started: its own task queues and node id
 * (so files running in parallel never take each other's work), real workers in this process, and the API on
 * an ephemeral port.
 */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import type Docker from 'dockerode';
import pino from 'pino';
import { BatchV1Api } from '@kubernetes/client-node';
import { WORKDIR_LABEL } from '../../activities/execution/adapter.js';
import { K8S_MANAGED_LABEL, K8S_RUN_LABEL } from '../../activities/execution/kubernetes/job-spec.js';
import { loadConfig, type Config } from '../../core/config.js';
import type { Db } from '../../core/db/pool.js';
import { ROLES, createToken, type Role } from '../../core/db/tokens.js';
import type { ApiServer } from '../../workers/api.js';
import { provisionBuiltInNode } from '../../workers/built-in-node.js';
import { compose, type WorkerRole } from '../../workers/compose.js';
import { readNodeIdentity, type NodeIdentity } from '../../workers/node-identity.js';
import { freePort } from '../../infra/dev/ports.js';
import { env, eventually } from './env.js';
import { adminKubeConfig } from './kubernetes.js';

export { env, eventually };

export const images = {
  get busybox() {
    return env('GG_TEST_IMAGE_BUSYBOX');
  },
  get example() {
    return env('GG_TEST_IMAGE_EXAMPLE');
  },
  /** infra/images/shell-type: the base of the "shell" template type (runs /template/main.sh). */
  get shellType() {
    return env('GG_TEST_IMAGE_SHELL_TYPE');
  },
};

let runtimeInstalled = false;

/** The tests' secrets folders go under this (on memory); test/run.ts gives each run its own, and fails the run if a file is left in it. */
export const SECRETS_ROOT = process.env.GG_TEST_SECRETS_ROOT ?? '/dev/shm/glider-gun-test';

export interface TestSystem {
  config: Config;
  db: Db;
  docker: Docker;
  client: Client;
  api: ApiServer;
  nodeId: string;
  /** A bearer token per role, made for this file. */
  tokens: Record<Role, string>;
  /** An API client with the admin token. */
  call: ReturnType<typeof apiClient>;
  /** host:port of this system's node gateway (the built-in node dials it). */
  gatewayAddress: string;
  /** The built-in node's identity (made now with the API's CA), for a node worker or an executor of a test's own. */
  nodeIdentity(): Promise<NodeIdentity>;
  /** Starts (again) the node worker; tests that simulate a node outage stop it. */
  startNodeWorker(): Promise<void>;
  stopNodeWorker(): Promise<void>;
  /** The cluster worker hosts the workflows and, with Kubernetes configured, the `cluster` target's runs. */
  startClusterWorker(): Promise<void>;
  stopClusterWorker(): Promise<void>;
  stop(): Promise<void>;
}

/** Set unless the suite was started with GG_TEST_KUBERNETES=0 (no test cluster): Kubernetes suites skip then. */
export const noCluster: string | false = !process.env.GG_TEST_KUBECONFIG_WORKER && 'GG_TEST_KUBERNETES=0: no test cluster started';

/**
 * The settings that make the cluster worker run the `cluster` target as Kubernetes Jobs on the test cluster
 * (test/run.ts starts it): the worker uses the ServiceAccount of infra/k8s/rbac.yaml, and the API listens
 * where pods can reach it.
 */
export async function kubernetesEnv(): Promise<Record<string, string>> {
  const port = await freePort();
  return {
    GLIDERGUN_KUBERNETES: 'true',
    GLIDERGUN_KUBECONFIG: env('GG_TEST_KUBECONFIG_WORKER'),
    GLIDERGUN_KUBERNETES_NAMESPACE: env('GG_TEST_K8S_NAMESPACE'),
    GLIDERGUN_KUBERNETES_RUNNER_IMAGE: env('GG_TEST_RUNNER_IMAGE'),
    GLIDERGUN_INSECURE_REGISTRIES: env('GG_TEST_REGISTRY'),
    GLIDERGUN_API_HOST: env('GG_TEST_HOST_ADDRESS'),
    GLIDERGUN_API_PORT: String(port),
    GLIDERGUN_KUBERNETES_AGENT_URL: `http://${env('GG_TEST_HOST_ADDRESS')}:${port}`,
  };
}

export async function startTestSystem(
  opts: { nodeWorker?: boolean; clusterWorker?: boolean; env?: Record<string, string>; /** The template builder worker; needs GG_TEST_REGISTRY. */ builder?: boolean } = {},
): Promise<TestSystem> {
  if (!runtimeInstalled) {
    // The node reaches Temporal through the gateway, which refuses RecordWorkerHeartbeat: none are sent.
    Runtime.install({ logger: new DefaultLogger((process.env.GG_TEST_WORKER_LOG_LEVEL as 'WARN' | undefined) ?? 'ERROR'), shutdownSignals: [], workerHeartbeatInterval: 0 });
    runtimeInstalled = true;
  }
  const suffix = randomBytes(4).toString('hex');
  const nodeId = `t${suffix}`;
  const config = loadConfig({
    DATABASE_URL: env('GG_TEST_DATABASE_URL'),
    TEMPORAL_ADDRESS: env('GG_TEST_TEMPORAL_ADDRESS'),
    GLIDERGUN_TASK_QUEUE: `gg-test-${suffix}`,
    GLIDERGUN_NODE_ID: nodeId,
    GLIDERGUN_DATA_DIR: `${env('GG_TEST_SCRATCH')}/data-${suffix}`,
    GLIDERGUN_SECRETS_DIR: `${SECRETS_ROOT}/${suffix}`,
    GLIDERGUN_LOG_LEVEL: 'warn',
    GLIDERGUN_STOP_GRACE_SECONDS: '2',
    GLIDERGUN_NODE_RUNNER_IMAGE: env('GG_TEST_NODE_RUNNER_IMAGE'),
    ...(process.env.GG_TEST_REGISTRY ? { GLIDERGUN_REGISTRY: `${process.env.GG_TEST_REGISTRY}/glider-gun/templates` } : {}),
    ...(process.env.DOCKER_HOST ? { DOCKER_HOST: process.env.DOCKER_HOST } : {}),
    ...opts.env,
  });
  // Every worker role is composed, so a test can start one it left stopped; no reconciler: tests settle runs by hand.
  const composed = await compose(config, ['api', 'cluster', 'gateway', 'node', ...(opts.builder ? (['builder'] as const) : [])], {
    workflowBundle: { codePath: env('GG_TEST_WORKFLOW_BUNDLE') },
    // Pods reach the API of a Kubernetes test at the address they were given; any free port otherwise.
    apiPort: config.kubernetes.enabled ? config.api.port : 0,
    log: pino({ level: process.env.GG_TEST_API_LOG ?? 'silent' }),
    reconciler: false,
    gatewayListen: '127.0.0.1:0',
    poolSize: 5,
  });
  const { db, docker } = composed;
  const leaveStopped: WorkerRole[] = [...(opts.clusterWorker === false ? (['cluster'] as const) : []), ...(opts.nodeWorker === false ? (['node'] as const) : [])];
  try {
    await db.query('INSERT INTO nodes (id, description) VALUES ($1, $2) ON CONFLICT DO NOTHING', [nodeId, 'test node']);
    await composed.start({ leaveStopped });
  } catch (err) {
    await composed.stop().catch(() => undefined);
    throw err;
  }
  const { api, temporal: client, gateway } = composed;
  if (!api || !client || !gateway) throw new Error('the test system composes the API and the gateway, so it has them and a Temporal client');

  const tokens = {} as Record<Role, string>;
  for (const role of ROLES) tokens[role] = (await createToken(db, { name: `${role}-${suffix}`, role, createdBy: 'test' })).secret;

  return {
    config,
    db,
    docker,
    client,
    api,
    nodeId,
    tokens,
    call: apiClient(api.url, tokens.admin),
    gatewayAddress: gateway.address,
    nodeIdentity: async () => readNodeIdentity(await provisionBuiltInNode(db, config, api.nodeCa, gateway.address)),
    startNodeWorker: () => composed.startWorker('node'),
    stopNodeWorker: () => composed.stopWorker('node'),
    startClusterWorker: () => composed.startWorker('cluster'),
    stopClusterWorker: () => composed.stopWorker('cluster'),
    async stop() {
      // A run's container is removed just after its outcome is recorded; a test that has seen the outcome
      // may get here first. Let the removal happen before the node worker goes.
      await eventually('this system\'s containers to be removed', async () => {
        const left = await docker.listContainers({ all: true, filters: { label: [`${WORKDIR_LABEL}=${config.node.workDir}`] } });
        return left.length === 0 ? true : undefined;
      }, 15_000).catch(() => undefined);
      // A run that never had a container (its image could not be pulled, say) is cleaned up just after its
      // outcome too: its secrets and folder go with that same activity. A cleanup that never comes still
      // fails the suite's leftover check after this wait.
      await eventually('this system\'s run secrets and folders to be removed', async () => {
        const left = [...(await readdir(config.node.secretsDir).catch(() => [])), ...(await readdir(path.join(config.node.workDir, 'runs')).catch(() => []))];
        return left.length === 0 ? true : undefined;
      }, 15_000).catch(() => undefined);
      // Likewise a run's Job (and its Secret, which the Job owns) on the cluster target.
      if (config.kubernetes.enabled && process.env.GG_TEST_KUBECONFIG_ADMIN) {
        const batch = adminKubeConfig().makeApiClient(BatchV1Api);
        const runIds = new Set((await db.query<{ id: string }>('SELECT id FROM runs')).rows.map((r) => r.id));
        await eventually('this system\'s Jobs to be removed', async () => {
          const jobs = await batch.listNamespacedJob({ namespace: config.kubernetes.namespace, labelSelector: `${K8S_MANAGED_LABEL}=true` });
          return jobs.items.some((j) => runIds.has(j.metadata?.labels?.[K8S_RUN_LABEL] ?? '')) ? undefined : true;
        }, 15_000).catch(() => undefined);
      }
      await composed.stop();
    },
  };
}

/** A small JSON client for the API under test. */
export function apiClient(baseUrl: string, token?: string, defaultHeaders: Record<string, string> = {}) {
  return async function call<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    extraHeaders: Record<string, string> = {},
  ): Promise<{ status: number; body: T; headers: Headers }> {
    const headers: Record<string, string> = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...defaultHeaders, ...extraHeaders };
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T, headers: res.headers };
  };
}

