/**
 * Workflows of test/integration/gateway.test.ts: run by a worker connected straight to Temporal, they schedule
 * activities on a node's queue, which an activity-only worker serves through the gateway.
 */
import { ActivityCancellationType, CancellationScope, isCancellation, proxyActivities, sleep } from '@temporalio/workflow';

/** The activities a node worker serves in the test (implemented in the test file). */
export interface GatewayTestActivities {
  echo(value: string): Promise<string>;
  /** Heartbeats `beats` times with its progress, then answers the last progress it was given back. */
  heartbeating(beats: number): Promise<number>;
  /** Fails on its first attempt, succeeds on the next. */
  flaky(): Promise<number>;
  /** Heartbeats until it is cancelled, then reports the cancellation. */
  untilCancelled(): Promise<void>;
}

export interface NodeActivitiesResult {
  echoed: string;
  heartbeats: number;
  flakyAttempt: number;
  cancelled: boolean;
}

/** One of each: a plain call, heartbeats, a retried failure, a cancellation the activity confirms. */
export async function nodeActivities(taskQueue: string): Promise<NodeActivitiesResult> {
  const acts = proxyActivities<GatewayTestActivities>({
    taskQueue,
    startToCloseTimeout: '1 minute',
    heartbeatTimeout: '10 seconds',
    retry: { initialInterval: '100 ms', maximumAttempts: 3 },
    // The workflow waits for the node to confirm the cancellation (RespondActivityTaskCanceled through the gateway).
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  });
  const echoed = await acts.echo('through the gateway');
  const heartbeats = await acts.heartbeating(3);
  const flakyAttempt = await acts.flaky();
  let cancelled = false;
  await CancellationScope.cancellable(async () => {
    const scope = CancellationScope.current();
    const running = acts.untilCancelled();
    await sleep('2 seconds');
    scope.cancel();
    await running;
  }).catch((err: unknown) => {
    if (!isCancellation(err)) throw err;
    cancelled = true;
  });
  return { echoed, heartbeats, flakyAttempt, cancelled };
}

/** One call on the node's queue (the idle worker's task). */
export async function oneEcho(taskQueue: string, value: string): Promise<string> {
  const { echo } = proxyActivities<GatewayTestActivities>({ taskQueue, startToCloseTimeout: '1 minute' });
  return echo(value);
}
