/**
 * container-vanished on the cluster target: a run's Job (and pod) removed while the cluster worker was down,
 * so its pod-runner never reported. The Docker counterpart is in reconciler.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BatchV1Api, CoreV1Api } from '@kubernetes/client-node';
import { jobName, runSelector } from '../../activities/execution/kubernetes/job-spec.js';
import { getAgentResult } from '../../core/db/run-agents.js';
import { createDeployment, registerExampleTemplate, type RunBody } from '../support/fixtures.js';
import { scriptImage } from '../support/images.js';
import { adminKubeConfig, runGoneFromCluster } from '../support/kubernetes.js';
import { pushToRegistry } from '../support/registry.js';
import { env, eventually, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

describe('a Job removed while the cluster worker was down', { skip: noCluster }, () => {
  let sys: TestSystem;
  before(async () => {
    // A long stop grace: the pod-runner, told to stop, waits that long for the template before it reports;
    // the kubelet kills it first when the pod is force-deleted, as when a node is lost.
    sys = await startTestSystem({ nodeWorker: false, env: { ...(await kubernetesEnv()), GLIDERGUN_STOP_GRACE_SECONDS: '120' } });
  });
  after(async () => {
    await sys.stop();
  });

  it('fails the run as container-vanished, and never makes the Job again', async () => {
    const admin = adminKubeConfig();
    const batch = admin.makeApiClient(BatchV1Api);
    const core = admin.makeApiClient(CoreV1Api);
    const namespace = env('GG_TEST_K8S_NAMESPACE');
    // Ignores SIGTERM; ends by itself after 40 s, so a Job made again would make the run succeed.
    const image = await pushToRegistry(await scriptImage(sys.docker, '#!/bin/sh\ntrap "" TERM\necho "example template vanishing"\nsleep 40\n'));
    const template = await registerExampleTemplate(sys.call, { image });
    const id = await createDeployment(sys.call, template, { message: 'vanish' }, { kind: 'cluster' });
    const started = await sys.call<RunBody>('POST', `/v1/deployments/${id}/runs`, { action: 'deploy' });
    const runId = started.body.id;
    const stdout = async () => (await fetch(`${sys.api.url}/v1/runs/${runId}/logs?stream=stdout`, { headers: { authorization: `Bearer ${sys.tokens.admin}` } })).text();
    await eventually('the template to run', async () => ((await stdout()).includes('example template vanishing') ? true : undefined), 120_000);
    const job = await batch.readNamespacedJob({ name: jobName(runId), namespace });

    await sys.stopClusterWorker();
    try {
      await batch.deleteNamespacedJob({ name: jobName(runId), namespace, propagationPolicy: 'Background' });
      for (const pod of (await core.listNamespacedPod({ namespace, labelSelector: runSelector(runId) })).items) {
        await core.deleteNamespacedPod({ name: pod.metadata!.name!, namespace, gracePeriodSeconds: 0 });
      }
      await runGoneFromCluster(runId);
    } finally {
      await sys.startClusterWorker();
    }
    const jobs = new Set<string>([job.metadata!.uid!]);
    const run = await eventually('the run to end', async () => {
      for (const j of (await batch.listNamespacedJob({ namespace, labelSelector: runSelector(runId) })).items) jobs.add(j.metadata!.uid!);
      const r = await sys.call<RunBody>('GET', `/v1/runs/${runId}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
    }, 120_000);
    assert.equal(run.status, 'failed', run.message ?? '');
    assert.equal(run.reason, 'container-vanished');
    assert.match(run.message ?? '', /was started but no longer exists/);
    assert.equal(await getAgentResult(sys.db, runId), undefined, 'the runner never reported: it was killed with its pod');
    assert.deepEqual([...jobs], [job.metadata!.uid!], 'no Job was made again');
    await runGoneFromCluster(runId);
  });
});
