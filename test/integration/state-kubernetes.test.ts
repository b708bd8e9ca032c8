/**
 * A state version that cannot be trusted, restored on the cluster target: the runner in the pod asks the
 * agent API for it, which refuses it and remembers why (core/db/run-agents.ts), and the run ends with that
 * reason in one attempt. The same tests as on a Docker node (test/integration/state.test.ts).
 */
import { after, before, describe, it } from 'node:test';
import type { SecretBox } from '../../core/crypto.js';
import { scriptImage } from '../support/images.js';
import { pushToRegistry } from '../support/registry.js';
import { COUNTING_TEMPLATE, stateBench, systemBox, untrustedStateChecks, type StateBench } from '../support/state-bench.js';
import { kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

describe('state that cannot be trusted, on Kubernetes', { skip: noCluster }, () => {
  let sys: TestSystem;
  let box: SecretBox;
  let bench: StateBench;
  before(async () => {
    sys = await startTestSystem({ nodeWorker: false, env: await kubernetesEnv() });
    box = await systemBox(sys);
    bench = stateBench(sys, box, { image: await pushToRegistry(await scriptImage(sys.docker, COUNTING_TEMPLATE)), target: { kind: 'cluster' } });
  });
  after(async () => {
    await sys.stop();
  });

  const untrusted = untrustedStateChecks(() => ({ bench, box }));
  it('refuses a version whose chunks were moved from another deployment: the run fails state-corrupt at once, the download answers 409', () => untrusted.movedFromAnotherDeployment());

  it('refuses a version whose chunks were moved from another version: the run fails state-corrupt at once, the download answers 409', () => untrusted.movedFromAnotherVersion());

  it('refuses a version whose chunks were swapped, at the first chunk, before any byte of it is used', () => untrusted.swapped());

  it('names a version sealed under another key state-key-mismatch, not damage: the run fails at once, the download answers 409', () => untrusted.sealedUnderAnotherKey());
});
