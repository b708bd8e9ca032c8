import type { NativeConnection } from '@temporalio/worker';
import { Worker } from '@temporalio/worker';
import type Docker from 'dockerode';
import { createBuilderActivities } from '../activities/templates/build-activities.js';
import type { Config } from '../core/config.js';
import { builderTaskQueue } from '../core/domain.js';
import type { Db } from '../core/db/pool.js';
import { RegistryCredentials } from '../core/registry-credentials.js';

/**
 * The builder worker: template image builds, on a machine with a Docker engine that can push to the
 * registry (GLIDERGUN_REGISTRY). Its task queue is the cluster worker's with `-builds` appended.
 */
export async function createBuilderWorker(opts: { connection: NativeConnection; config: Config; db: Db; docker: Docker }): Promise<Worker> {
  const { config } = opts;
  if (!config.builds.registry) throw new Error('the builder worker needs GLIDERGUN_REGISTRY');
  return Worker.create({
    connection: opts.connection,
    namespace: config.temporal.namespace,
    taskQueue: builderTaskQueue(config.temporal.taskQueue),
    activities: createBuilderActivities({
      db: opts.db,
      docker: opts.docker,
      registry: config.builds.registry,
      registryCredentials: new RegistryCredentials(config.registries.credentials),
      insecureRegistries: config.registries.insecure,
      allowFileGitUrls: config.builds.allowFileGitUrls,
    }),
    // A cancel reaches the build only in a heartbeat's answer.
    maxHeartbeatThrottleInterval: '1 second',
    shutdownGraceTime: '10 seconds',
  });
}
