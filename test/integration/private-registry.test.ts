/**
 * Template images in registries that want credentials, as every production registry does: a Docker node
 * pulls with GLIDERGUN_REGISTRY_AUTH_FILE's credentials; on Kubernetes the worker reads the image's
 * configuration with them and the kubelet pulls with GLIDERGUN_KUBERNETES_IMAGE_PULL_SECRETS.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api } from '@kubernetes/client-node';
import Docker from 'dockerode';
import { pushImageTo, registryHostsToml, startImageRegistry, type ImageRegistry } from '../../infra/dev/kubernetes.js';
import { createDeployment, registerExampleTemplate, waitForRun } from '../support/fixtures.js';
import { adminKubeConfig, createPullSecret, runGoneFromCluster } from '../support/kubernetes.js';
import { startGuardedRegistry } from '../support/registry.js';
import { env, images, kubernetesEnv, noCluster, startTestSystem, type TestSystem } from '../support/system.js';

const PULLER = 'puller';
const PULL_TIMEOUT_SECONDS = 8;

describe('template images in a registry that wants credentials', () => {
  const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
  const id = randomBytes(4).toString('hex');
  const pullSecret = `gg-test-pull-${id}`;
  const cluster = !noCluster;
  let sys: TestSystem;
  let ownRegistry: ImageRegistry | undefined;
  let guards: Awaited<ReturnType<typeof startGuardedRegistry>>[] = [];
  let adminCore: CoreV1Api | undefined;
  const hostsFiles: string[] = [];
  /** The same image behind four doors: `known` (credentials everywhere), `workerOnly` (not in the pull secret), `unknown` (none), `wrong` (refused). */
  const image: Record<'known' | 'workerOnly' | 'unknown' | 'wrong', string> = { known: '', workerOnly: '', unknown: '', wrong: '' };

  before(async () => {
    const scratch = path.join(env('GG_TEST_SCRATCH'), `private-registry-${id}`);
    await mkdir(scratch, { recursive: true });
    ownRegistry = process.env.GG_TEST_REGISTRY ? undefined : await startImageRegistry({ dir: path.join(scratch, 'registry') });
    const backend = process.env.GG_TEST_REGISTRY ?? ownRegistry!.address;
    // Under a name of its own, so no engine has it already and every run has to pull it.
    const local = `glider-gun/private-${id}:1`;
    await docker.getImage(images.example).tag({ repo: `glider-gun/private-${id}`, tag: '1' });
    const pushed = await pushImageTo(backend, local); // it untags the pushed name itself
    await docker.getImage(local).remove();
    const repository = pushed.slice(backend.length + 1);

    const passwords = { known: 'known-pw', workerOnly: 'worker-only-pw', unknown: 'unknown-pw', wrong: 'right-pw' };
    guards = await Promise.all(Object.values(passwords).map((password) => startGuardedRegistry(backend, { username: PULLER, password })));
    const [known, workerOnly, unknown, wrong] = guards.map((g) => g.address) as [string, string, string, string];
    Object.assign(image, { known: `${known}/${repository}`, workerOnly: `${workerOnly}/${repository}`, unknown: `${unknown}/${repository}`, wrong: `${wrong}/${repository}` });

    // Both forms a Docker config file has: `auth` (base64 of user:password), and username/password.
    const authFile = path.join(scratch, 'auth.json');
    await writeFile(
      authFile,
      JSON.stringify({
        auths: {
          [known]: { auth: Buffer.from(`${PULLER}:${passwords.known}`).toString('base64') },
          [`http://${workerOnly}/v2/`]: { username: PULLER, password: passwords.workerOnly },
          [wrong]: { username: PULLER, password: 'not-the-password' },
        },
      }),
    );

    if (cluster) {
      for (const address of [known, workerOnly]) {
        const dir = path.join(env('GG_TEST_K8S_REGISTRY_HOSTS'), address);
        await mkdir(dir, { recursive: true });
        await writeFile(path.join(dir, 'hosts.toml'), registryHostsToml(address));
        hostsFiles.push(dir);
      }
      adminCore = adminKubeConfig().makeApiClient(CoreV1Api);
      // The kubelet's credentials name only `known`: `workerOnly` shows what a missing pull secret does. The
      // Secret is made as docs/operators-guide.md says.
      await createPullSecret(pullSecret, { [known]: { username: PULLER, password: passwords.known } }, scratch);
    }
    sys = await startTestSystem({
      env: {
        ...(cluster ? await kubernetesEnv() : {}),
        GLIDERGUN_REGISTRY_AUTH_FILE: authFile,
        GLIDERGUN_KUBERNETES_IMAGE_PULL_SECRETS: pullSecret,
        GLIDERGUN_KUBERNETES_PULL_TIMEOUT_SECONDS: String(PULL_TIMEOUT_SECONDS),
      },
    });
  });

  after(async () => {
    await sys?.stop();
    for (const ref of Object.values(image)) if (ref) await docker.getImage(ref).remove().catch(() => undefined);
    await adminCore?.deleteNamespacedSecret({ name: pullSecret, namespace: env('GG_TEST_K8S_NAMESPACE') }).catch(() => undefined);
    for (const dir of hostsFiles) await rm(dir, { recursive: true, force: true });
    await Promise.all(guards.map((g) => g.stop()));
    await ownRegistry?.stop();
  });

  const run = async (ref: string, target: { kind: 'node'; node: string } | { kind: 'cluster' }) => {
    const template = await registerExampleTemplate(sys.call, { image: ref });
    const deploymentId = await createDeployment(sys.call, template, { message: 'private' }, target);
    const started = await sys.call<{ id: string }>('POST', `/v1/deployments/${deploymentId}/runs`, { action: 'deploy' });
    assert.equal(started.status, 202);
    const ended = await waitForRun(sys.call, started.body.id);
    // Whatever the outcome, the run's Job, pod and Secret go.
    if (target.kind === 'cluster') await runGoneFromCluster(ended.id);
    return ended;
  };


  describe('on a Docker node', () => {
    it('pulls with the configured credentials and runs the template', async () => {
      const ended = await run(image.known, { kind: 'node', node: sys.nodeId });
      assert.equal(ended.status, 'succeeded', JSON.stringify(ended));
    });

    it('fails as image-unavailable, saying why, with no credentials for the registry or refused ones', async () => {
      const none = await run(image.unknown, { kind: 'node', node: sys.nodeId });
      assert.equal(none.status, 'failed');
      assert.equal(none.reason, 'image-unavailable');
      assert.match(none.message ?? '', /wants credentials and none are configured for it: see GLIDERGUN_REGISTRY_AUTH_FILE/);
      const refused = await run(image.wrong, { kind: 'node', node: sys.nodeId });
      assert.equal(refused.reason, 'image-unavailable');
      assert.match(refused.message ?? '', /refuses the credentials of puller/);
    });
  });

  describe('on Kubernetes', { skip: noCluster }, () => {
    it('reads the image with the credentials, the kubelet pulls it with the pull secret, and the template runs', async () => {
      const ended = await run(image.known, { kind: 'cluster' });
      assert.equal(ended.status, 'succeeded', JSON.stringify(ended));
    });

    it('fails at once as image-unavailable when the worker has no credentials for the registry, or refused ones', async () => {
      const none = await run(image.unknown, { kind: 'cluster' });
      assert.equal(none.reason, 'image-unavailable');
      assert.match(none.message ?? '', /wants credentials and none are configured for it/);
      const refused = await run(image.wrong, { kind: 'cluster' });
      assert.equal(refused.reason, 'image-unavailable');
      assert.match(refused.message ?? '', /refuses the credentials of puller/);
    });

    it('fails as image-unavailable after the pull wait when no pull secret holds the registry\'s credentials', async () => {
      const ended = await run(image.workerOnly, { kind: 'cluster' });
      assert.equal(ended.status, 'failed');
      assert.equal(ended.reason, 'image-unavailable');
      assert.match(ended.message ?? '', new RegExp(`could not be pulled within ${PULL_TIMEOUT_SECONDS}s`));
    });
  });
});
