import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { K8S_MANAGED_LABEL, K8S_RUN_LABEL } from '../../activities/execution/kubernetes/job-spec.js';
import { PodEvents } from '../../activities/execution/kubernetes/pod-events.js';
import { newId } from '../../core/ids.js';
import { env, eventually, noCluster } from '../support/system.js';
import { adminKubeConfig } from '../support/kubernetes.js';

/** How long a wait lasts when nothing wakes it: far longer than any event takes to arrive. */
const LONG_MS = 60_000;

/**
 * The shared pod watch of the Job adapter, with the worker's own (RBAC-limited) credentials: a change to a
 * run's pod wakes that run's supervisor at once, and nobody else's.
 */
describe('the Job adapter\'s pod watch', { skip: noCluster }, () => {
  let namespace: string;
  let worker: KubeConfig;
  /** The worker may not create bare pods: the test makes them as admin. */
  let adminCore: CoreV1Api;
  const pods: string[] = [];

  before(() => {
    namespace = env('GG_TEST_K8S_NAMESPACE');
    worker = new KubeConfig();
    worker.loadFromFile(env('GG_TEST_KUBECONFIG_WORKER'));
    const admin = adminKubeConfig();
    adminCore = admin.makeApiClient(CoreV1Api);
  });

  after(async () => {
    for (const name of pods) await adminCore.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }).catch(() => undefined);
    await eventually('the test pods to be gone', async () => {
      const { items } = await adminCore.listNamespacedPod({ namespace, labelSelector: `${K8S_MANAGED_LABEL}=true` });
      return items.some((p) => pods.includes(p.metadata?.name ?? '')) ? undefined : true;
    });
  });

  /** A pod of the run that no node will take (so no container runs), labelled as the adapter's Jobs label theirs. */
  const createPod = async (runId: string) => {
    const name = `gg-test-${runId}`;
    pods.push(name);
    await adminCore.createNamespacedPod({
      namespace,
      body: {
        metadata: { name, labels: { [K8S_MANAGED_LABEL]: 'true', [K8S_RUN_LABEL]: runId } },
        spec: {
          nodeSelector: { 'glider-gun.io/no-such-node': 'true' },
          automountServiceAccountToken: false,
          containers: [{ name: 'main', image: env('GG_TEST_K8S_IMAGE_BUSYBOX') }],
        },
      },
    });
    return name;
  };

  const timed = async (wait: Promise<void>) => {
    const started = Date.now();
    await wait;
    return Date.now() - started;
  };

  it('wakes the run whose pod appears, changes and goes, long before its own next look', async () => {
    const events = new PodEvents(worker, namespace);
    try {
      const runId = newId('run');
      // The first wait opens the watch; the pod is made once it is open (an earlier look would have seen it).
      const first = events.next(runId, LONG_MS, []);
      await new Promise((r) => setTimeout(r, 1_000));
      const name = await createPod(runId);
      assert.ok((await timed(first)) < LONG_MS / 2, 'woken by the pod being created');
      const deleted = events.next(runId, LONG_MS, []);
      await adminCore.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
      assert.ok((await timed(deleted)) < LONG_MS / 2, 'woken by the pod being deleted');
    } finally {
      await events.close();
    }
  });

  it('does not wake a run for another run\'s pod; a wait ends at its time or on its signal', async () => {
    const events = new PodEvents(worker, namespace);
    try {
      const mine = newId('run');
      const waited = timed(events.next(mine, 3_000, []));
      await new Promise((r) => setTimeout(r, 500));
      await createPod(newId('run'));
      assert.ok((await waited) >= 2_900, 'another run\'s pod did not wake this one');

      const cancel = new AbortController();
      const cancelled = timed(events.next(mine, LONG_MS, [undefined, cancel.signal]));
      cancel.abort();
      assert.ok((await cancelled) < 2_000, 'the signal ends the wait');
      assert.ok((await timed(events.next(mine, LONG_MS, [cancel.signal]))) < 500, 'an aborted signal ends it at once');
    } finally {
      await events.close();
    }
  });

  it('without a reachable API server, a wait still lasts its time: no early wake that would make the supervisor spin', async () => {
    const unreachable = new KubeConfig();
    unreachable.loadFromOptions({
      clusters: [{ name: 'gone', server: 'https://127.0.0.1:1', skipTLSVerify: true }],
      users: [{ name: 'nobody', token: 'x' }],
      contexts: [{ name: 'gone', cluster: 'gone', user: 'nobody' }],
      currentContext: 'gone',
    });
    const events = new PodEvents(unreachable, namespace);
    try {
      const runId = newId('run');
      for (let i = 0; i < 3; i++) assert.ok((await timed(events.next(runId, 300, []))) >= 290, `wait ${i} lasted its time`);
    } finally {
      await events.close();
    }
  });
});
