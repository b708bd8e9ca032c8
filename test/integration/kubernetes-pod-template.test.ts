/**
 * GLIDERGUN_KUBERNETES_POD_TEMPLATE on the real cluster: a run's pod runs as the named service account,
 * with its token, groups, node selector, tolerations, labels and annotations; a template the API server
 * refuses fails the run at once with the server's words, leaving nothing behind.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BatchV1Api, CoreV1Api } from '@kubernetes/client-node';
import Docker from 'dockerode';
import { runSelector } from '../../activities/execution/kubernetes/job-spec.js';
import { createDeployment, registerExampleTemplate, waitForRun } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { adminKubeConfig, runGoneFromCluster } from '../support/kubernetes.js';
import { pushToRegistry } from '../support/registry.js';
import { env, eventually, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

describe('the pod template of runs on Kubernetes', { skip: noCluster }, () => {
  const id = randomBytes(4).toString('hex');
  const account = `gg-test-runner-${id}`;
  let namespace: string;
  let scratch: string;
  let batch: BatchV1Api;
  let core: CoreV1Api;
  let image: string;

  before(async () => {
    namespace = env('GG_TEST_K8S_NAMESPACE');
    scratch = path.join(env('GG_TEST_SCRATCH'), `pod-template-${id}`);
    await mkdir(scratch, { recursive: true });
    const admin = adminKubeConfig();
    batch = admin.makeApiClient(BatchV1Api);
    core = admin.makeApiClient(CoreV1Api);
    await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: account } } });
    const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
    image = await pushToRegistry(
      await scriptImage(
        docker,
        `#!/bin/sh
echo "groups: $(id -G)"
if [ -s /var/run/secrets/kubernetes.io/serviceaccount/token ]; then echo "token: yes"; else echo "token: no"; fi
sleep 3
`,
      ),
    );
  });
  after(async () => {
    await core.deleteNamespacedServiceAccount({ name: account, namespace }).catch(() => undefined);
  });

  const withTemplate = async (name: string, yaml: string) => {
    const file = path.join(scratch, name);
    await writeFile(file, yaml);
    return startTestSystem({ nodeWorker: false, env: { ...(await kubernetesEnv()), GLIDERGUN_KUBERNETES_POD_TEMPLATE: file } });
  };
  const startRun = async (sys: TestSystem) => {
    const template = await registerExampleTemplate(sys.call, { image });
    const deploymentId = await createDeployment(sys.call, template, { message: 'pod template' }, { kind: 'cluster' });
    const run = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
    assert.equal(run.status, 202);
    return run.body.id;
  };

  it('runs the pod as the template says: account and token, groups, placement, labels and annotations', async () => {
    const sys = await withTemplate(
      'pod-template.yaml',
      `metadata:
  labels: {team: platform}
  annotations: {example.com/cost-center: "42"}
spec:
  serviceAccountName: ${account}
  automountServiceAccountToken: true
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: example.com/dedicated, operator: Exists, effect: NoSchedule}]
  securityContext: {supplementalGroups: [4321]}
`,
    );
    try {
      const runId = await startRun(sys);
      const job = await eventually('the run\'s Job', async () => (await batch.listNamespacedJob({ namespace, labelSelector: runSelector(runId) })).items[0]);
      const pod = job.spec!.template;
      assert.equal(pod.metadata?.labels?.team, 'platform');
      assert.equal(pod.metadata?.labels?.['glider-gun.io/run'], runId);
      assert.equal(pod.metadata?.annotations?.['example.com/cost-center'], '42');
      assert.equal(pod.spec?.serviceAccountName, account);
      assert.deepEqual(pod.spec?.nodeSelector, { 'kubernetes.io/os': 'linux' });
      // The client answers class instances; compare their JSON.
      assert.deepEqual(JSON.parse(JSON.stringify(pod.spec?.tolerations)), [{ key: 'example.com/dedicated', operator: 'Exists', effect: 'NoSchedule' }]);

      const ended = await waitForRun(sys.call, runId);
      assert.equal(ended.status, 'succeeded', JSON.stringify(ended));
      const log = await (await fetch(`${sys.api.url}/v1/runs/${runId}/logs?stream=stdout`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } })).text();
      assert.match(log, /^groups: .*\b4321\b/m);
      assert.match(log, /^token: yes$/m, 'the service account\'s token was mounted, as asked');
      await runGoneFromCluster(runId);
    } finally {
      await sys.stop();
    }
  });

  it('fails a run at once when the API server refuses the pod the template makes, with its reason, leaving nothing', async () => {
    // Valid YAML and known fields, but no node selector term: only the API server can tell.
    const sys = await withTemplate('refused.yaml', 'spec:\n  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: []}}}\n');
    try {
      const t0 = Date.now();
      const runId = await startRun(sys);
      const ended = await waitForRun(sys.call, runId);
      assert.equal(ended.status, 'failed');
      assert.equal(ended.reason, 'infrastructure');
      assert.match(ended.message ?? '', /Kubernetes refused the run's Job \(422\): .*nodeSelectorTerms: Required value/);
      assert.ok(Date.now() - t0 < 20_000, 'not retried');
      await runGoneFromCluster(runId);
    } finally {
      await sys.stop();
    }
  });
});
