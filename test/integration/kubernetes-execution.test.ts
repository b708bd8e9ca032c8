/**
 * What is particular to the Kubernetes adapter, on the test cluster (test/run.ts starts it): the Job's shape
 * and what it must not hold, adoption of a running Job by a restarted worker, logs that outlive the kubelet's
 * log rotation, and the failure modes that must end a run with a clear reason and leave nothing behind.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { BatchV1Api, CoreV1Api, Watch, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { FINISHED_JOB_TTL_SECONDS, K8S_MANAGED_LABEL, K8S_RUN_LABEL, jobName, runSelector } from '../../activities/execution/kubernetes/job-spec.js';
import { getAgentResult } from '../../core/db/run-agents.js';
import { EXAMPLE_PARAMETERS, executeRunAttempts, uniqueName, waitForRun, type RunBody } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { adminKubeConfig, runGoneFromCluster } from '../support/kubernetes.js';
import { pushToRegistry } from '../support/registry.js';
import { env, eventually, images, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

type Run = RunBody;

const SECRET = 'k8s-secret-value-never-in-the-job';

/**
 * Every ADDED and DELETED event of one kind of object in a namespace, from a list's resourceVersion on: a real
 * watch, reopened where it left off when the API server or the client's inactivity timeout closes it, so nothing
 * created after `start` returns is missed. An ERROR event (e.g. 410 Gone: events were lost) is kept in `failure`.
 */
class NamespaceEvents {
  readonly added: KubernetesObject[] = [];
  readonly deleted: KubernetesObject[] = [];
  failure: unknown;
  reopened = 0;
  private controller: AbortController | undefined;
  private stopped = false;

  private constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly path: string,
    private resourceVersion: string,
  ) {}

  static async start(kubeConfig: KubeConfig, path: string, list: () => Promise<{ metadata?: { resourceVersion?: string } }>): Promise<NamespaceEvents> {
    const events = new NamespaceEvents(kubeConfig, path, (await list()).metadata!.resourceVersion!);
    await events.open();
    return events;
  }

  /** The run's objects among those added: named gg-<run> (the Job; its pods' names start so) or labelled with the run. */
  addedOf(runId: string): string[] {
    return this.added.filter((o) => o.metadata?.labels?.[K8S_RUN_LABEL] === runId || o.metadata?.name?.startsWith(jobName(runId))).map((o) => o.metadata!.name!);
  }

  deletedOf(runId: string): string[] {
    return this.deleted.filter((o) => o.metadata?.labels?.[K8S_RUN_LABEL] === runId || o.metadata?.name?.startsWith(jobName(runId))).map((o) => o.metadata!.name!);
  }

  stop(): void {
    this.stopped = true;
    this.controller?.abort();
  }

  private async open(): Promise<void> {
    this.controller = await new Watch(this.kubeConfig).watch(
      this.path,
      { resourceVersion: this.resourceVersion, allowWatchBookmarks: true },
      (type: string, obj: KubernetesObject) => {
        if (type === 'ERROR') {
          this.failure ??= obj;
          return;
        }
        this.resourceVersion = obj.metadata?.resourceVersion ?? this.resourceVersion;
        if (type === 'ADDED') this.added.push(obj);
        if (type === 'DELETED') this.deleted.push(obj);
      },
      (err: unknown) => {
        if (this.stopped || this.failure !== undefined) return;
        this.reopened++;
        if (this.reopened > 100) {
          this.failure = err ?? new Error('the watch kept closing');
          return;
        }
        this.open().catch((e: unknown) => {
          this.failure ??= e;
        });
      },
    );
  }
}

describe('runs on Kubernetes', { skip: noCluster }, () => {
  let sys: TestSystem;
  let batch: BatchV1Api;
  let core: CoreV1Api;
  let namespace: string;
  let example: string;
  let exampleImage: string;

  async function template(image: string): Promise<string> {
    const name = uniqueName('k8s');
    assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
    const v = await sys.call('POST', `/v1/templates/${name}/versions`, {
      image,
      tfVars: true,
      parameters: [...EXAMPLE_PARAMETERS, { name: 'api_key', type: 'string', required: false, sensitive: true }],
    });
    assert.equal(v.status, 201, JSON.stringify(v.body));
    return name;
  }

  async function startRun(tpl: string, parameters: Record<string, unknown>, limits: Record<string, unknown> = {}, on = sys): Promise<string> {
    const d = await on.call<{ id: string }>('POST', '/v1/deployments', { template: { name: tpl }, parameters, target: { kind: 'cluster' }, limits });
    assert.equal(d.status, 201, JSON.stringify(d.body));
    const r = await on.call<{ id: string }>('POST', `/v1/deployments/${d.body.id}/runs`, { action: 'deploy' });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    return r.body.id;
  }

  const ended = (runId: string): Promise<Run> => waitForRun(sys.call, runId);

  async function stdout(runId: string, on = sys): Promise<string> {
    const res = await fetch(`${on.api.url}/v1/runs/${runId}/logs?stream=stdout`, { headers: { authorization: `Bearer ${on.tokens.admin}` } });
    return res.text();
  }


  before(async () => {
    sys = await startTestSystem({ nodeWorker: false, env: { ...(await kubernetesEnv()), GLIDERGUN_KUBERNETES_SCHEDULE_TIMEOUT_SECONDS: '5' } });
    // Assertions look with the admin's eyes; the system under test uses the worker's ServiceAccount.
    const admin = adminKubeConfig();
    batch = admin.makeApiClient(BatchV1Api);
    core = admin.makeApiClient(CoreV1Api);
    namespace = env('GG_TEST_K8S_NAMESPACE');
    exampleImage = await pushToRegistry(images.example);
    example = await template(exampleImage);
  });
  after(async () => {
    await sys.stop();
  });

  it('makes one Job per run that never retries, holds no credential or secret value, and is removed after the run', async () => {
    const runId = await startRun(example, { message: 'shape', sleep_seconds: 30, api_key: SECRET });
    const job = await eventually('the Job', async () => batch.readNamespacedJob({ name: jobName(runId), namespace }).catch(() => undefined));
    assert.equal(job.metadata?.labels?.[K8S_MANAGED_LABEL], 'true');
    assert.equal(job.spec?.backoffLimit, 0);
    assert.equal(job.spec?.podReplacementPolicy, 'Failed');
    assert.ok((job.spec?.activeDeadlineSeconds ?? 0) > 30, 'a deadline only as a backstop');
    assert.equal(job.spec?.ttlSecondsAfterFinished, FINISHED_JOB_TTL_SECONDS, 'Kubernetes removes a Job nobody cleaned up');
    const pod = job.spec?.template.spec;
    assert.equal(pod?.restartPolicy, 'Never');
    assert.equal(pod?.automountServiceAccountToken, false);
    assert.match(pod?.containers[0]?.image ?? '', /@sha256:[0-9a-f]{64}$/, 'the image is pinned by digest');
    const text = JSON.stringify(job);
    assert.ok(!text.includes(SECRET), 'no sensitive value in the Job');
    // The Secret is made before its Job and given the Job as owner right after: wait for that step.
    const secret = await eventually('the Secret owned by its Job', async () => {
      const s = await core.readNamespacedSecret({ name: jobName(runId), namespace });
      return s.metadata?.ownerReferences?.length ? s : undefined;
    });
    const credential = Buffer.from(secret.data?.credential ?? '', 'base64').toString();
    assert.match(credential, /^ggr_/);
    assert.ok(!text.includes(credential), 'the credential is not in the Job');
    assert.equal(secret.metadata?.ownerReferences?.[0]?.uid, job.metadata?.uid, 'the Secret goes with its Job');

    await eventually('the template to run', async () => ((await stdout(runId)).includes('example template') ? true : undefined), 120_000);
    const pods = await core.listNamespacedPod({ namespace, labelSelector: runSelector(runId) });
    assert.equal(pods.items.length, 1);
    assert.ok(!JSON.stringify(pods.items[0]).includes(SECRET), 'no sensitive value in the pod');

    assert.equal((await sys.call('POST', `/v1/runs/${runId}/cancel`)).status, 202);
    assert.equal((await ended(runId)).status, 'cancelled');
    await runGoneFromCluster(runId);
  });

  it('adopts its running Job when the worker restarts mid-run: one Job, one pod, the template ran once', async () => {
    // Watched from before the run starts to after it is gone: every Job and pod the run ever had is counted.
    const admin = adminKubeConfig();
    const jobs = await NamespaceEvents.start(admin, `/apis/batch/v1/namespaces/${namespace}/jobs`, () => batch.listNamespacedJob({ namespace }));
    const pods = await NamespaceEvents.start(admin, `/api/v1/namespaces/${namespace}/pods`, () => core.listNamespacedPod({ namespace }));
    try {
      const runId = await startRun(example, { message: 'adopt', sleep_seconds: 30 });
      await eventually('the template to run', async () => ((await stdout(runId)).includes('example template') ? true : undefined), 120_000);
      const before_ = await batch.readNamespacedJob({ name: jobName(runId), namespace });
      await sys.stopClusterWorker();
      // The worker is gone while its run goes on: the Job is still running when the next worker comes.
      const during = await batch.readNamespacedJob({ name: jobName(runId), namespace });
      assert.equal(during.metadata?.uid, before_.metadata?.uid);
      assert.equal(during.status?.active, 1, `the run was still going when its worker stopped: ${JSON.stringify(during.status)}`);
      await sys.startClusterWorker();
      const run = await ended(runId);
      await runGoneFromCluster(runId);
      // Every event up to the removal has arrived once the watch reports the removal itself.
      await eventually('the watch to see the Job and its pod removed', () =>
        Promise.resolve(jobs.deletedOf(runId).length > 0 && pods.deletedOf(runId).length > 0 ? true : undefined),
      );
      assert.equal(jobs.failure, undefined, 'the Job watch saw every event');
      assert.equal(pods.failure, undefined, 'the pod watch saw every event');
      assert.deepEqual(jobs.addedOf(runId), [jobName(runId)], 'one Job across the restart, never a second one');
      assert.equal(pods.addedOf(runId).length, 1, `one pod across the restart: ${pods.addedOf(runId).join(', ')}`);

      assert.equal(run.status, 'succeeded', run.message ?? '');
      assert.equal(run.outputs?.runCount, 1);
      assert.equal((await stdout(runId)).match(/example template: action/g)?.length, 1, 'the template ran once');
      // The restarted worker's attempt is the one that finished the run: it took over the running Job.
      const { deploymentId } = (await sys.call<{ deploymentId: string }>('GET', `/v1/runs/${runId}`)).body;
      const attempts = await executeRunAttempts(sys.client, deploymentId);
      assert.equal(attempts.length, 1);
      assert.ok(attempts[0]! >= 2, `executeRun finished on attempt ${attempts[0]}, after the restart`);
    } finally {
      jobs.stop();
      pods.stop();
    }
  });

  it('reports the Kubernetes API server and the build registry in /healthz', async () => {
    const health = await sys.call<{ status: string; checks: Record<string, { ok: boolean }> }>('GET', '/healthz');
    assert.equal(health.status, 200, JSON.stringify(health.body));
    assert.equal(health.body.checks.kubernetes?.ok, true);
    assert.equal(health.body.checks.registry?.ok, true);
  });

  it('finishes a run that ended while no worker watched it and whose Job was removed since, from its runner\'s report', async () => {
    const runId = await startRun(example, { message: 'unwatched', sleep_seconds: 2 });
    await eventually('the template to run', async () => ((await stdout(runId)).includes('example template') ? true : undefined), 120_000);
    await sys.stopClusterWorker();
    try {
      await eventually('the runner to report', async () => getAgentResult(sys.db, runId), 60_000);
      // As the TTL controller would, a day later (ttlSecondsAfterFinished).
      await batch.deleteNamespacedJob({ name: jobName(runId), namespace, propagationPolicy: 'Background' });
      await runGoneFromCluster(runId);
    } finally {
      await sys.startClusterWorker();
    }
    const run = await ended(runId);
    assert.equal(run.status, 'succeeded', run.message ?? '');
    assert.equal(run.outputs?.runCount, 1);
    assert.ok(run.stateVersion !== null, 'the state the runner archived is the run\'s');
    assert.equal((await stdout(runId)).match(/example template: action/g)?.length, 1, 'the template ran once');
  });

  it('keeps every byte of a log that the kubelet rotated away (it keeps 2 files of 1 MiB here)', async () => {
    // 4.4 MB over 6 s, so the kubelet's log monitor (every 3 s) rotates it, then a pause to look at what it kept.
    const script = '#!/bin/sh\necho "example template big"\nfor i in 0 1 2 3 4 5; do seq $((i * 100000 + 1)) $((i * 100000 + 100000)); sleep 1; done\necho done-printing\nsleep 5\n';
    const image = await pushToRegistry(await scriptImage(sys.docker, script));
    const runId = await startRun(await template(image), { message: 'big' });
    await eventually('the template to finish printing', async () => ((await stdout(runId)).includes('done-printing') ? true : undefined), 120_000);
    const [pod] = (await core.listNamespacedPod({ namespace, labelSelector: runSelector(runId) })).items;
    const kubeletLog = await core.readNamespacedPodLog({ name: pod!.metadata!.name!, namespace, container: 'template' });
    let expected = 'example template big\n';
    for (let i = 1; i <= 600_000; i++) expected += `${i}\n`;
    expected += 'done-printing\n';
    assert.ok(kubeletLog.length < expected.length / 2, `the kubelet kept ${kubeletLog.length} of ${expected.length} bytes: it did not rotate`);
    const run = await ended(runId);
    assert.equal(run.status, 'succeeded', run.message ?? '');
    const got = await stdout(runId);
    assert.equal(got.length, expected.length);
    assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(expected).digest('hex'));
    await runGoneFromCluster(runId);
  });

  it('fails a pod that no node can take as unschedulable after the bounded wait, leaving nothing behind', async () => {
    const runId = await startRun(example, { message: 'too big' }, { memoryMb: 1024 * 1024 });
    const run = await ended(runId);
    assert.equal(run.status, 'failed');
    assert.equal(run.reason, 'unschedulable');
    assert.match(run.message ?? '', /Insufficient memory|nodes are available/);
    await runGoneFromCluster(runId);
  });

  it('fails at once with image-unavailable when the template image is not in the registry', async () => {
    const tpl = await template(`${env('GG_TEST_REGISTRY')}/glider-gun/no-such-template:1`);
    const runId = await startRun(tpl, { message: 'missing' });
    const run = await ended(runId);
    assert.equal(run.status, 'failed');
    assert.equal(run.reason, 'image-unavailable');
    assert.match(run.message ?? '', /not in registry/);
    await runGoneFromCluster(runId);
  });
});

describe('runs on Kubernetes whose images the node cannot pull', { skip: noCluster }, () => {
  let sys: TestSystem;

  before(async () => {
    sys = await startTestSystem({
      nodeWorker: false,
      env: {
        ...(await kubernetesEnv()),
        GLIDERGUN_KUBERNETES_RUNNER_IMAGE: `${env('GG_TEST_REGISTRY')}/glider-gun/no-such-runner:1`,
        GLIDERGUN_KUBERNETES_PULL_TIMEOUT_SECONDS: '5',
      },
    });
  });
  after(async () => {
    await sys.stop();
  });

  it('fails the run with image-unavailable after the bounded wait, and removes the Job', async () => {
    const name = uniqueName('k8s-pull');
    assert.equal((await sys.call('POST', '/v1/templates', { name })).status, 201);
    const image = await pushToRegistry(images.example);
    assert.equal((await sys.call('POST', `/v1/templates/${name}/versions`, { image, tfVars: true, parameters: EXAMPLE_PARAMETERS })).status, 201);
    const d = await sys.call<{ id: string }>('POST', '/v1/deployments', { template: { name }, parameters: { message: 'x' }, target: { kind: 'cluster' } });
    const r = await sys.call<{ id: string }>('POST', `/v1/deployments/${d.body.id}/runs`, { action: 'deploy' });
    const run = await waitForRun(sys.call, r.body.id);
    assert.equal(run.status, 'failed');
    assert.equal(run.reason, 'image-unavailable');
    assert.match(run.message ?? '', /no-such-runner/);
    const admin = adminKubeConfig();
    const batch = admin.makeApiClient(BatchV1Api);
    await eventually('the Job to be gone', async () => {
      const jobs = await batch.listNamespacedJob({ namespace: env('GG_TEST_K8S_NAMESPACE'), labelSelector: runSelector(r.body.id) });
      return jobs.items.length === 0 ? true : undefined;
    });
  });
});
