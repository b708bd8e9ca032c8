/**
 * Runs of a template whose image is a multi-arch index (arm64 listed first) in a registry that wants Bearer
 * tokens (test/support/token-registry.ts): a Docker node pulls it with GLIDERGUN_REGISTRY_AUTH_FILE's
 * credentials; on Kubernetes the cluster worker reads the linux/amd64 image's entrypoint with them and the
 * kubelet pulls the index with the pull secret. Registry-level checks are in registry-token-auth.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api } from '@kubernetes/client-node';
import Docker from 'dockerode';
import { registryHostsToml } from '../../infra/dev/registry.js';
import { createDeployment, registerExampleTemplate, waitForRun } from '../support/fixtures.js';
import { adminKubeConfig, createPullSecret, runGoneFromCluster } from '../support/kubernetes.js';
import { tempDirs } from '../support/temp-dirs.js';
import { pushMultiArch, pushWithEngine, startTokenRegistry, type TokenRegistry } from '../support/token-registry.js';
import { env, images, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

const PULLER = { username: 'puller', password: 'puller-pw' };
const PUSHER = { username: 'pusher', password: 'pusher-pw' };

describe('template runs of a multi-arch image in a registry that wants Bearer tokens', () => {
  const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
  const dirs = tempDirs('gg-registry-token-runs-');
  const id = randomBytes(4).toString('hex');
  const pullSecret = `gg-test-token-pull-${id}`;
  const cluster = !noCluster;
  const users = { [PULLER.username]: { password: PULLER.password, actions: ['pull'] as const }, [PUSHER.username]: { password: PUSHER.password, actions: ['pull', 'push'] as const } };
  /** `known`: the image's registry, credentials in the file; `wrong`: another, a wrong password in the file; `unknown`: another, not in the file. */
  const registries: Partial<Record<'known' | 'wrong' | 'unknown', TokenRegistry>> = {};
  /** The index's reference in each (only `known` holds it; the others refuse before that matters). */
  const image: Record<'known' | 'wrong' | 'unknown', string> = { known: '', wrong: '', unknown: '' };
  let sys: TestSystem;
  let adminCore: CoreV1Api | undefined;
  let hostsDir: string | undefined;

  before(async () => {
    for (const which of ['known', 'wrong', 'unknown'] as const) registries[which] = await startTokenRegistry(dirs, users);
    const known = registries.known!.address;
    const repository = `glider-gun/token-example-${id}`;
    await pushWithEngine(docker, images.example, { repository, tag: '1' }, { ...PUSHER, serveraddress: known });
    await pushMultiArch(registries.known!, repository, '1');
    for (const which of ['known', 'wrong', 'unknown'] as const) image[which] = `${registries[which]!.address}/${repository}:multi-oci`;

    const authFile = path.join(await dirs.fresh(), 'auth.json');
    await writeFile(authFile, JSON.stringify({ auths: { [known]: PULLER, [registries.wrong!.address]: { ...PULLER, password: 'not-the-password' } } }));
    if (cluster) {
      hostsDir = path.join(env('GG_TEST_K8S_REGISTRY_HOSTS'), known);
      await mkdir(hostsDir, { recursive: true });
      await writeFile(path.join(hostsDir, 'hosts.toml'), registryHostsToml(known));
      adminCore = adminKubeConfig().makeApiClient(CoreV1Api);
      await createPullSecret(pullSecret, { [known]: PULLER }, await dirs.fresh());
    }
    sys = await startTestSystem({
      env: {
        ...(cluster ? await kubernetesEnv() : {}),
        GLIDERGUN_REGISTRY_AUTH_FILE: authFile,
        GLIDERGUN_KUBERNETES_IMAGE_PULL_SECRETS: pullSecret,
      },
    });
  });

  after(async () => {
    await sys?.stop();
    await docker.getImage(image.known).remove().catch(() => undefined);
    await adminCore?.deleteNamespacedSecret({ name: pullSecret, namespace: env('GG_TEST_K8S_NAMESPACE') }).catch(() => undefined);
    if (hostsDir) await rm(hostsDir, { recursive: true, force: true });
    for (const r of Object.values(registries)) await r.stop();
  });

  const run = async (ref: string, target: { kind: 'node'; node: string } | { kind: 'cluster' }) => {
    const template = await registerExampleTemplate(sys.call, { image: ref });
    const message = `token ${randomBytes(3).toString('hex')}`;
    const deploymentId = await createDeployment(sys.call, template, { message }, target);
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
    assert.equal(started.status, 202);
    const ended = await waitForRun(sys.call, started.body.id);
    if (target.kind === 'cluster') await runGoneFromCluster(ended.id);
    return { ended, message };
  };

  describe('on a Docker node', () => {
    it('pulls the index with the configured credentials and runs the template', async () => {
      const { ended, message } = await run(image.known, { kind: 'node', node: sys.nodeId });
      assert.equal(ended.status, 'succeeded', JSON.stringify(ended));
      assert.equal(ended.outputs?.message, message);
    });

    it('fails as image-unavailable, saying why, with no credentials for the registry or refused ones', async () => {
      const none = (await run(image.unknown, { kind: 'node', node: sys.nodeId })).ended;
      assert.equal(none.reason, 'image-unavailable', JSON.stringify(none));
      assert.match(none.message ?? '', /wants credentials and none are configured for it: see GLIDERGUN_REGISTRY_AUTH_FILE/);
      const refused = (await run(image.wrong, { kind: 'node', node: sys.nodeId })).ended;
      assert.equal(refused.reason, 'image-unavailable', JSON.stringify(refused));
      assert.match(refused.message ?? '', /refuses the credentials of puller/);
    });
  });

  describe('on Kubernetes', { skip: noCluster }, () => {
    it('reads the linux/amd64 entrypoint with a token, the kubelet pulls the index with the pull secret, and the template runs', async () => {
      const { ended, message } = await run(image.known, { kind: 'cluster' });
      assert.equal(ended.status, 'succeeded', JSON.stringify(ended));
      assert.equal(ended.outputs?.message, message);
    });
  });
});
