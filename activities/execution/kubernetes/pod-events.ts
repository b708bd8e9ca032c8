import { Watch, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { K8S_MANAGED_LABEL, K8S_RUN_LABEL } from './job-spec.js';

/** How long the watch stays open once no run is being supervised. */
const IDLE_MS = 15_000;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

/**
 * Wakes a run's supervisor as soon as one of its pods changes, through one watch on the namespace's
 * Glider Gun pods shared by every run of this worker (not a poll, nor a watch, per run). An event only
 * says "look again": the supervisor still reads the Job and its pods itself, and still looks on its own
 * every few seconds, so a missed event or a broken watch costs latency, never correctness.
 */
export class PodEvents {
  private readonly waiters = new Map<string, Set<() => void>>();
  private watch: Promise<AbortController | undefined> | undefined;
  private retryAt = 0;
  private retryMs = RETRY_MIN_MS;
  private idle: NodeJS.Timeout | undefined;

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly namespace: string,
  ) {}

  /** Resolves when the run's pods change, after `ms`, or when one of `signals` aborts, whichever is first. */
  async next(runId: string, ms: number, signals: readonly (AbortSignal | undefined)[]): Promise<void> {
    this.ensureWatching();
    await new Promise<void>((resolve) => {
      const waiters = this.waiters.get(runId) ?? new Set();
      this.waiters.set(runId, waiters);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(done);
        if (waiters.size === 0 && this.waiters.get(runId) === waiters) this.waiters.delete(runId);
        for (const s of signals) s?.removeEventListener('abort', done);
        this.scheduleIdleStop();
        resolve();
      };
      const timer = setTimeout(done, ms);
      waiters.add(done);
      for (const s of signals) {
        if (s?.aborted) return done();
        s?.addEventListener('abort', done, { once: true });
      }
    });
  }

  /** Closes the watch now (a worker shutting down); the next `next()` opens it again. */
  async close(): Promise<void> {
    clearTimeout(this.idle);
    const watch = this.watch;
    this.watch = undefined;
    (await watch)?.abort();
  }

  /** Wakes the run's supervisors, or all of them. */
  private wake(runId?: string): void {
    const targets = runId === undefined ? [...this.waiters.values()] : [this.waiters.get(runId)];
    for (const set of targets) for (const done of [...(set ?? [])]) done();
  }

  private ensureWatching(): void {
    clearTimeout(this.idle);
    if (this.watch || Date.now() < this.retryAt) return;
    let connected = false;
    let current: Promise<AbortController | undefined> | undefined = undefined;
    const ended = () => {
      if (this.watch !== current) return;
      this.watch = undefined;
      if (connected) {
        this.retryMs = RETRY_MIN_MS;
        // Closed by the server or by the client's 30 s inactivity timeout: events may have been missed
        // before it is reopened, so everyone looks again (and reopens it).
        this.wake();
      } else {
        // Reopened by the next supervisor that looks, no sooner than the backoff allows: a watch refused
        // at once (no RBAC verb, API server down) must not turn every supervisor's wait into a busy loop.
        this.retryAt = Date.now() + this.retryMs;
        this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
      }
    };
    current = new Watch(this.kubeConfig)
      .watch(
        `/api/v1/namespaces/${this.namespace}/pods`,
        { labelSelector: `${K8S_MANAGED_LABEL}=true` },
        (_type, pod: V1Pod) => {
          const runId = pod.metadata?.labels?.[K8S_RUN_LABEL];
          if (runId) this.wake(runId);
        },
        () => ended(),
      )
      .then(
        (controller) => {
          connected = true;
          return controller;
        },
        () => {
          ended();
          return undefined;
        },
      );
    this.watch = current;
  }

  private scheduleIdleStop(): void {
    if (this.waiters.size > 0 || !this.watch) return;
    clearTimeout(this.idle);
    this.idle = setTimeout(() => void this.close(), IDLE_MS);
    this.idle.unref();
  }
}
