import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runJob } from '../../activities/execution/kubernetes/job-spec.js';
import { loadPodTemplate } from '../../activities/execution/kubernetes/pod-template.js';
import type { RunSpec } from '../../core/domain.js';

const dir = await mkdtemp(path.join(os.tmpdir(), 'gg-pod-template-'));
const file = async (name: string, text: string) => {
  const f = path.join(dir, name);
  await writeFile(f, text);
  return f;
};

describe('the pod template', () => {
  it('reads YAML (or JSON) with the fields it knows', async () => {
    const t = await loadPodTemplate(
      await file(
        'ok.yaml',
        `metadata:
  labels: {team: platform}
  annotations: {example.com/cost-center: "42"}
spec:
  serviceAccountName: terraform
  automountServiceAccountToken: true
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: example.com/dedicated, operator: Exists, effect: NoSchedule}]
  securityContext: {supplementalGroups: [4321]}
`,
      ),
    );
    assert.equal(t.spec?.serviceAccountName, 'terraform');
    assert.deepEqual(t.metadata?.labels, { team: 'platform' });
    assert.deepEqual(await loadPodTemplate(await file('empty.yaml', '')), {}, 'an empty file adds nothing');
    assert.deepEqual(await loadPodTemplate(await file('ok.json', '{"spec": {"priorityClassName": "batch"}}')), { spec: { priorityClassName: 'batch' } });
  });

  it('refuses fields it does not know, Glider Gun\'s own labels, bad values and bad YAML, naming each', async () => {
    await assert.rejects(loadPodTemplate(await file('host.yaml', 'spec:\n  hostNetwork: true\n  volumes: []\n')), /GLIDERGUN_KUBERNETES_POD_TEMPLATE: .*host\.yaml: spec: Unrecognized keys: "hostNetwork", "volumes"/);
    await assert.rejects(loadPodTemplate(await file('own.yaml', 'metadata:\n  labels: {glider-gun.io/run: x}\n')), /metadata\.labels\.glider-gun\.io\/run: glider-gun\.io\/ keys are Glider Gun's own/);
    await assert.rejects(loadPodTemplate(await file('op.yaml', 'spec:\n  tolerations: [{operator: Sometimes}]\n')), /spec\.tolerations\.0\.operator/);
    await assert.rejects(loadPodTemplate(await file('bad.yaml', 'spec: [unclosed\n')), /bad\.yaml: /);
    await assert.rejects(loadPodTemplate(path.join(dir, 'missing.yaml')), /missing\.yaml: ENOENT/);
  });

  it('goes into every run\'s pod under the contract\'s own fields', async () => {
    const spec: RunSpec = {
      runId: 'run-abc', deploymentId: 'dep-abc', action: 'deploy', image: 'reg:5000/t:1', parameters: {}, env: {}, timeoutSeconds: 60, stopGraceSeconds: 5,
    };
    const podTemplate = await loadPodTemplate(
      await file('apply.yaml', 'metadata:\n  labels: {team: platform}\nspec:\n  serviceAccountName: terraform\n  nodeSelector: {pool: runs}\n'),
    );
    const settings = { namespace: 'ns', runnerImage: 'r:1', agentUrl: 'http://a', scheduleTimeoutSeconds: 30, pullTimeoutSeconds: 30 };
    const pod = runJob(spec, { ...settings, podTemplate }, { ref: 'reg:5000/t@sha256:aa', entrypoint: ['/e'] }).spec!.template;
    assert.equal(pod.metadata?.labels?.team, 'platform');
    assert.equal(pod.metadata?.labels?.['glider-gun.io/run'], 'run-abc');
    assert.equal(pod.spec?.serviceAccountName, 'terraform');
    assert.deepEqual(pod.spec?.nodeSelector, { pool: 'runs' });
    assert.equal(pod.spec?.restartPolicy, 'Never');
    assert.equal(pod.spec?.automountServiceAccountToken, false, 'no API token unless the template asks for one');
    const plain = runJob(spec, settings, { ref: 'reg:5000/t@sha256:aa', entrypoint: ['/e'] }).spec!.template;
    assert.equal(plain.spec?.serviceAccountName, undefined);
    assert.equal(plain.metadata?.annotations, undefined);
  });
});
