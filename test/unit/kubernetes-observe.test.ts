import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import { runJob, runSecret } from '../../activities/execution/kubernetes/job-spec.js';
import { observeRun } from '../../activities/execution/kubernetes/observe.js';
import { parseImageReference } from '../../activities/execution/image-config.js';
import type { RunSpec } from '../../core/domain.js';

const job: V1Job = { metadata: { name: 'gg-run-x' }, status: {} };
const created = '2026-11-25T10:00:00Z';
const pod = (status: V1Pod['status']): V1Pod => ({ metadata: { name: 'gg-run-x-abcde', creationTimestamp: new Date(created) }, status });

describe('observing a run\'s Job and pod', () => {
  it('sees a Job without a pod, and a failed Job without one', () => {
    assert.deepEqual(observeRun(job, []), { kind: 'no-pod', jobFailure: undefined });
    const failed: V1Job = { ...job, status: { conditions: [{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded', message: 'too long' }] } };
    assert.deepEqual(observeRun(failed, []), { kind: 'no-pod', jobFailure: 'DeadlineExceeded: too long' });
  });

  it('tells an unschedulable pod, with the scheduler\'s message and since when', () => {
    const seen = observeRun(job, [pod({ phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/1 nodes are available: 1 Insufficient memory.' }] })]);
    assert.equal(seen.kind, 'unschedulable');
    assert.match((seen as { message: string }).message, /Insufficient memory/);
    assert.equal((seen as { since: Date }).since.toISOString(), '2026-11-25T10:00:00.000Z');
  });

  it('tells an image that cannot be pulled, for the init container (the runner) as for the template', () => {
    for (const reason of ['ErrImagePull', 'ImagePullBackOff']) {
      const seen = observeRun(job, [pod({ phase: 'Pending', initContainerStatuses: [{ name: 'install-runner', image: 'r/runner:1', imageID: '', ready: false, restartCount: 0, state: { waiting: { reason, message: 'not found' } } }] })]);
      assert.equal(seen.kind, 'image-pull-failing');
      assert.match((seen as { message: string }).message, new RegExp(`r/runner:1: ${reason} \\(not found\\)`));
    }
  });

  it('sees the template running, and ended with its exit code and reason', () => {
    const running = observeRun(job, [pod({ phase: 'Running', containerStatuses: [{ name: 'template', image: 'i', imageID: '', ready: true, restartCount: 0, state: { running: { startedAt: new Date('2026-11-25T10:00:05Z') } } }] })]);
    assert.deepEqual(running, { kind: 'running', podName: 'gg-run-x-abcde', startedAt: new Date('2026-11-25T10:00:05Z') });
    const ended = observeRun(job, [pod({ phase: 'Failed', containerStatuses: [{ name: 'template', image: 'i', imageID: '', ready: false, restartCount: 0, state: { terminated: { exitCode: 137, reason: 'OOMKilled' } } }] })]);
    assert.equal(ended.kind, 'ended');
    assert.equal((ended as { exitCode: number }).exitCode, 137);
    assert.equal((ended as { reason: string }).reason, 'OOMKilled');
  });

  it('reports a failed init container as an ended pod', () => {
    const seen = observeRun(job, [pod({ phase: 'Pending', initContainerStatuses: [{ name: 'install-runner', image: 'r', imageID: '', ready: false, restartCount: 0, state: { terminated: { exitCode: 1 } } }] })]);
    assert.equal(seen.kind, 'ended');
    assert.equal((seen as { reason: string }).reason, 'InitContainerFailed');
  });
});

describe('the Job and Secret of a run', () => {
  const spec: RunSpec = {
    runId: 'run-abc', deploymentId: 'dep-abc', action: 'deploy', image: 'reg:5000/t:1', parameters: { a: 1 },
    env: { GLIDERGUN_ACTION: 'deploy' }, timeoutSeconds: 60, stopGraceSeconds: 5, cpus: 0.5, memoryMb: 256,
  };
  const settings = { namespace: 'ns', runnerImage: 'reg:5000/runner:1', agentUrl: 'http://10.0.0.1:8080', scheduleTimeoutSeconds: 30, pullTimeoutSeconds: 30 };

  it('wraps the image\'s entrypoint with the pod-runner and passes the action last', () => {
    const j = runJob(spec, settings, { ref: 'reg:5000/t@sha256:aa', entrypoint: ['/entrypoint.sh'] });
    const c = j.spec!.template.spec!.containers[0]!;
    assert.deepEqual(c.command, ['/gg/pod-runner', 'run', '--', '/entrypoint.sh', 'deploy']);
    assert.deepEqual(c.resources?.limits, { cpu: '500m', memory: '256Mi' });
    assert.equal(j.spec!.template.spec!.terminationGracePeriodSeconds, 5 + 300, 'the grace leaves the runner time to archive');
    assert.ok(!JSON.stringify(j).includes('credential":'), 'the credential is only named, never held');
  });

  it('keeps the credential, the parameters and the secrets in the Secret only', () => {
    const s = runSecret(spec, settings, 'ggr_x', { k: 'v' });
    assert.deepEqual(Object.keys(s.stringData!).sort(), ['credential', 'template-parameters.json', 'template-secrets.json']);
    assert.equal(s.stringData!['template-secrets.json'], '{\n  "k": "v"\n}\n');
  });
});

describe('image references', () => {
  it('splits registry, repository and tag or digest', () => {
    assert.deepEqual(parseImageReference('127.0.0.1:5000/glider-gun/t:1'), { registry: '127.0.0.1:5000', repository: 'glider-gun/t', reference: '1' });
    assert.deepEqual(parseImageReference('reg.example/a/b'), { registry: 'reg.example', repository: 'a/b', reference: 'latest' });
    assert.deepEqual(parseImageReference('localhost/x@sha256:ab'), { registry: 'localhost', repository: 'x', reference: 'sha256:ab' });
    assert.throws(() => parseImageReference('busybox:latest'), /does not name a registry/);
  });
});
