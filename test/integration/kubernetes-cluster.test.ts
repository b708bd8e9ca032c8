import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ApiException, AppsV1Api, BatchV1Api, CoreV1Api, KubeConfig, type V1Job, type V1Pod } from '@kubernetes/client-node';
import { newId } from '../../core/ids.js';
import { env, eventually } from '../support/system.js';
import { adminKubeConfig } from '../support/kubernetes.js';

const enabled = !!process.env.GG_TEST_KUBECONFIG_WORKER;

/** The status of a refused call: the client throws ApiException with the HTTP code. */
async function statusOf(call: Promise<unknown>): Promise<number> {
  try {
    await call;
    return 200;
  } catch (err) {
    if (err instanceof ApiException) return (err as ApiException<unknown>).code;
    throw err;
  }
}

/**
 * The test cluster (infra/dev/kubernetes.ts) as the Job adapter sees it: the worker's kubeconfig may do
 * what infra/k8s/rbac.yaml allows in its namespace, nothing else, and a Job's pod really runs.
 */
describe('the Kubernetes test cluster', { skip: !enabled && 'GG_TEST_KUBERNETES=0: no cluster started' }, () => {
  let namespace: string;
  let batch: BatchV1Api;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  /** The worker may not read logs (its runs' logs come through the pod-runner): checks read them as admin. */
  let adminCore: CoreV1Api;
  const jobs: string[] = [];

  before(() => {
    namespace = env('GG_TEST_K8S_NAMESPACE');
    const kc = new KubeConfig();
    kc.loadFromFile(env('GG_TEST_KUBECONFIG_WORKER'));
    batch = kc.makeApiClient(BatchV1Api);
    core = kc.makeApiClient(CoreV1Api);
    apps = kc.makeApiClient(AppsV1Api);
    const admin = adminKubeConfig();
    adminCore = admin.makeApiClient(CoreV1Api);
  });

  after(async () => {
    for (const name of jobs) await batch.deleteNamespacedJob({ name, namespace, propagationPolicy: 'Background' }).catch(() => undefined);
  });

  const job = (script: string): V1Job => {
    const name = `smoke-${newId('run')}`;
    jobs.push(name);
    return {
      metadata: { name, labels: { 'app.kubernetes.io/managed-by': 'glider-gun-test' } },
      spec: {
        backoffLimit: 0,
        template: {
          spec: {
            restartPolicy: 'Never',
            automountServiceAccountToken: false,
            containers: [{ name: 'main', image: env('GG_TEST_K8S_IMAGE_BUSYBOX'), command: ['sh', '-c', script] }],
          },
        },
      },
    };
  };

  const finishedPod = (jobName: string) =>
    eventually(
      `the pod of ${jobName} to finish`,
      async () => {
        const { items } = await core.listNamespacedPod({ namespace, labelSelector: `job-name=${jobName}` });
        const pod: V1Pod | undefined = items.find((p) => p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed');
        return pod;
      },
      90_000,
    );

  it('runs a Job with the worker\'s account: its pod succeeds and its log is readable', async () => {
    const created = await batch.createNamespacedJob({ namespace, body: job('echo "hello from $(hostname)"; echo to stderr >&2') });
    const name = created.metadata!.name!;
    const pod = await finishedPod(name);
    assert.equal(pod.status?.phase, 'Succeeded', JSON.stringify(pod.status));
    const log = await adminCore.readNamespacedPodLog({ name: pod.metadata!.name!, namespace });
    assert.match(log, new RegExp(`hello from ${pod.metadata!.name}`));
    assert.match(log, /to stderr/);
    const status = await eventually('the Job to complete', async () => {
      const j = await batch.readNamespacedJob({ name, namespace });
      return j.status?.succeeded === 1 ? j.status : undefined;
    });
    assert.equal(status.succeeded, 1);
  });

  it('refuses what the Role does not grant (403)', async () => {
    assert.equal(await statusOf(core.listNode()), 403, 'nodes are cluster-scoped');
    assert.equal(await statusOf(core.listNamespacedSecret({ namespace: 'kube-system' })), 403, 'other namespaces');
    assert.equal(await statusOf(core.listNamespacedSecret({ namespace })), 403, 'secrets: no list, only by name');
    assert.equal(await statusOf(batch.listNamespacedJob({ namespace })), 403, 'Jobs: only by name');
    // A pod that has a log, made by the admin: the worker is refused a log that exists and that the admin can read.
    const logPod = `logs-${newId('run')}`;
    await adminCore.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: logPod, labels: { 'app.kubernetes.io/managed-by': 'glider-gun-test' } },
        spec: {
          restartPolicy: 'Never',
          automountServiceAccountToken: false,
          containers: [{ name: 'main', image: env('GG_TEST_K8S_IMAGE_BUSYBOX'), command: ['sh', '-c', `echo ${logPod} was here`] }],
        },
      },
    });
    try {
      const ran = await eventually('the admin\'s pod to finish', async () => {
        const p = await adminCore.readNamespacedPod({ name: logPod, namespace });
        return p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed' ? p : undefined;
      }, 90_000);
      assert.equal(ran.status?.phase, 'Succeeded', JSON.stringify(ran.status));
      assert.match(await adminCore.readNamespacedPodLog({ name: logPod, namespace }), new RegExp(`${logPod} was here`), 'the log is there to read');
      assert.equal(await statusOf(core.readNamespacedPodLog({ name: logPod, namespace })), 403, 'no pod logs');
    } finally {
      await adminCore.deleteNamespacedPod({ name: logPod, namespace, gracePeriodSeconds: 0 });
    }
    assert.equal(await statusOf(core.createNamespacedPod({ namespace, body: { metadata: { name: 'bare' }, spec: { containers: [{ name: 'c', image: 'x' }] } } })), 403, 'pods only through Jobs');
    assert.equal(
      await statusOf(
        apps.createNamespacedDeployment({
          namespace,
          body: {
            metadata: { name: 'not-allowed' },
            spec: { selector: { matchLabels: { a: 'b' } }, template: { metadata: { labels: { a: 'b' } }, spec: { containers: [{ name: 'c', image: 'x' }] } } },
          },
        }),
      ),
      403,
      'deployments',
    );
    // And what it grants works, in its namespace: a Secret by name.
    const secret = `smoke-${newId('run')}`;
    await core.createNamespacedSecret({ namespace, body: { metadata: { name: secret }, stringData: { k: 'v' } } });
    assert.equal(Buffer.from((await core.readNamespacedSecret({ name: secret, namespace })).data!.k!, 'base64').toString(), 'v');
    await core.deleteNamespacedSecret({ name: secret, namespace });
  });

  it('lets a pod call a server on the host address', async () => {
    // (No `wget -T`: Debian busybox-static's wget segfaults with it.)
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(req.url ?? '');
      res.end('pong from the host\n');
    });
    await new Promise<void>((resolve) => server.listen(0, env('GG_TEST_HOST_ADDRESS'), resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const created = await batch.createNamespacedJob({ namespace, body: job(`wget -q -O - http://${env('GG_TEST_HOST_ADDRESS')}:${port}/ping`) });
      const pod = await finishedPod(created.metadata!.name!);
      const log = await adminCore.readNamespacedPodLog({ name: pod.metadata!.name!, namespace });
      assert.equal(pod.status?.phase, 'Succeeded', log);
      assert.match(log, /pong from the host/);
      assert.deepEqual(seen, ['/ping']);
    } finally {
      server.close();
    }
  });
});
