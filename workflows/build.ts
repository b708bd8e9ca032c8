/**
 * One template build (`build-<id>`): fetch the source if it is a git repository, build the image FROM the
 * type's image, push it, then record the new template version and the build's end together. Cancelling the
 * workflow (the API's cancel, or the Temporal UI) stops the build and records it as cancelled.
 */
import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  log,
  proxyActivities,
} from '@temporalio/workflow';
import type { BuildActivities, BuilderActivities } from '../activities/templates/build-activities.js';
import { BuildFailure, FINAL_BUILD_FAILURES } from '../core/domain.js';

export interface BuildWorkflowInput {
  buildId: string;
  /** Where the builder worker (Docker engine, registry access) polls. */
  builderTaskQueue: string;
  timeoutSeconds: number;
}

export const buildWorkflowId = (buildId: string): string => `build-${buildId}`;


const db = proxyActivities<BuildActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '10 seconds', maximumAttempts: 10 },
});

export async function templateBuildWorkflow(input: BuildWorkflowInput): Promise<void> {
  const builder = proxyActivities<BuilderActivities>({
    taskQueue: input.builderTaskQueue,
    scheduleToStartTimeout: '10 minutes',
    startToCloseTimeout: `${input.timeoutSeconds + 60} seconds`,
    heartbeatTimeout: '30 seconds',
    // A cancelled build is recorded as such only once the engine has stopped it.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: { initialInterval: '2 seconds', maximumAttempts: 3, nonRetryableErrorTypes: [...FINAL_BUILD_FAILURES] },
  });
  const started = await db.startBuild(input.buildId);
  if (!started) return; // already ended (a replayed start of a cancelled build)
  try {
    const built = await builder.buildTemplateImage(input.buildId, input.timeoutSeconds);
    await CancellationScope.nonCancellable(() => db.completeBuild(input.buildId, built));
  } catch (err) {
    await CancellationScope.nonCancellable(async () => {
      if (isCancellation(err)) {
        await db.failBuild(input.buildId, { status: 'cancelled', message: 'cancelled on request' });
        return;
      }
      const cause = err instanceof ActivityFailure ? err.cause : err;
      const type = cause instanceof ApplicationFailure ? cause.type : undefined;
      const reason = FINAL_BUILD_FAILURES.find((f) => f === type) ?? BuildFailure.Infrastructure;
      const message = cause instanceof Error ? cause.message : String(cause);
      log.warn('build failed', { buildId: input.buildId, message });
      await db.failBuild(input.buildId, { status: 'failed', reason, message });
    });
    if (isCancellation(err)) throw err;
  }
}
