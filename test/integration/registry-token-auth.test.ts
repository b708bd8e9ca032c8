/**
 * A registry that wants Bearer tokens, as production registries do: Debian's docker-registry (distribution
 * 2.8) with `auth: token`, verifying every token of a token service started here (test/support/token-issuer.ts).
 * Through it: the build's credential check and digest read-back (activities/templates/registry.ts), a real
 * template build through the Docker engine, and the image configuration the Kubernetes adapter reads
 * (activities/execution/image-config.ts), also of a multi-arch index that lists arm64 before amd64.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import Docker from 'dockerode';
import tar from 'tar-stream';
import { ImageAccessDeniedError, RegistryClient } from '../../activities/execution/image-config.js';
import { generateDockerfile } from '../../activities/templates/dockerfile.js';
import { buildAndPushImage, PushFailedError } from '../../activities/templates/image-build.js';
import { checkCredentials, CredentialsRefusedError, manifestDigest } from '../../activities/templates/registry.js';
import { RegistryCredentials, type RegistryAuth } from '../../core/registry-credentials.js';
import { startImageRegistry, type ImageRegistry } from '../../infra/dev/registry.js';
import { scriptImage } from '../support/images.js';
import { tempDirs } from '../support/temp-dirs.js';
import { startTokenIssuer, type TokenIssuer } from '../support/token-issuer.js';

const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const ARM64_ENTRYPOINT = ['/arm64-entrypoint'];

const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const signal = () => AbortSignal.timeout(15_000);

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p);
  return Buffer.concat(parts);
}

/** tar of the given files, uncompressed. */
async function tarOf(files: Record<string, string>, mode = 0o644): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, body] of Object.entries(files)) pack.entry({ name, mode, mtime: new Date(0) }, body);
  pack.finalize();
  return collect(pack as AsyncIterable<Buffer>);
}

describe('a registry that wants Bearer tokens from a token service (distribution 2.8 verifying them)', () => {
  const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
  const dirs = tempDirs('gg-registry-token-');
  const id = randomBytes(4).toString('hex');
  let issuer: TokenIssuer;
  let registry: ImageRegistry;
  let address: string;
  const users = { builder: { password: 'builder-pw', actions: ['pull', 'push'] as const }, reader: { password: 'reader-pw', actions: ['pull'] as const } };
  const as = (user: keyof typeof users, password = users[user].password): RegistryAuth => ({ username: user, password, serveraddress: address });
  /** busybox with ENTRYPOINT /entrypoint.sh, local; then also in the token registry as `repository`:1 (linux/amd64). */
  let typeImage: string;
  let entrypoint: string[];
  let cmd: string[];
  const repository = `glider-gun/token-type-${id}`;
  let amd64Digest: string;
  /** The multi-arch tags, arm64 listed first: tag → the index's digest (of the bytes put). */
  const indexes: Record<string, string> = {};
  const made: string[] = [];

  /** A token straight from the issuer, not through the product: for the test's own requests. */
  const ownToken = (actions: string[]) => `Bearer ${issuer.mint('test', [{ type: 'repository', name: repository, actions }])}`;

  /** What the registry serves for a manifest reference, asked with our own token. */
  const served = async (repo: string, reference: string, accept: string) => {
    const res = await fetch(`http://${address}/v2/${repo}/manifests/${reference}`, {
      method: 'HEAD',
      headers: { accept, authorization: `Bearer ${issuer.mint('test', [{ type: 'repository', name: repo, actions: ['pull'] }])}` },
      signal: signal(),
    });
    assert.equal(res.status, 200, `HEAD ${repo}:${reference}`);
    return res.headers.get('docker-content-digest');
  };

  const uploadBlob = async (data: Buffer): Promise<{ digest: string; size: number }> => {
    const digest = sha256(data);
    const started = await fetch(`http://${address}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: { authorization: ownToken(['pull', 'push']) }, signal: signal() });
    assert.equal(started.status, 202, await started.text());
    const url = new URL(started.headers.get('location')!, `http://${address}`);
    url.searchParams.set('digest', digest);
    const put = await fetch(url, { method: 'PUT', headers: { authorization: ownToken(['pull', 'push']), 'content-type': 'application/octet-stream' }, body: data, signal: signal() });
    assert.equal(put.status, 201, await put.text());
    return { digest, size: data.length };
  };

  const putManifest = async (reference: string, mediaType: string, body: Buffer) => {
    const res = await fetch(`http://${address}/v2/${repository}/manifests/${reference}`, {
      method: 'PUT',
      headers: { authorization: ownToken(['pull', 'push']), 'content-type': mediaType },
      body,
      signal: signal(),
    });
    assert.equal(res.status, 201, await res.text());
    assert.equal(res.headers.get('docker-content-digest'), sha256(body));
  };

  before(async () => {
    const dir = await dirs.fresh();
    issuer = await startTokenIssuer({ dir, users });
    registry = await startImageRegistry({
      dir: await dirs.fresh(),
      tokenAuth: { realm: issuer.realm, service: issuer.service, issuer: issuer.issuer, rootCertBundle: issuer.certFile },
      say: () => undefined,
    });
    address = registry.address;

    // The registry really verifies: its own challenge names our service, it takes the issuer's token, and it
    // refuses the same token signed by a key it does not trust.
    const challenge = await fetch(`http://${address}/v2/`, { signal: signal() });
    assert.equal(challenge.headers.get('www-authenticate'), `Bearer realm="${issuer.realm}",service="${issuer.service}"`);
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    assert.equal((await fetch(`http://${address}/v2/`, { headers: { authorization: `Bearer ${issuer.mint('builder', [])}` }, signal: signal() })).status, 200);
    assert.equal((await fetch(`http://${address}/v2/`, { headers: { authorization: `Bearer ${issuer.mint('builder', [], stranger)}` }, signal: signal() })).status, 401);

    typeImage = await scriptImage(docker, '#!/bin/sh\n# a template type for the token registry tests\nexec /template/bin/run.sh "$@"\n');
    const { Config } = await docker.getImage(typeImage).inspect();
    entrypoint = Config.Entrypoint as string[];
    cmd = Config.Cmd ?? [];
    assert.deepEqual(entrypoint, ['/entrypoint.sh']);

    // linux/amd64: the type image, pushed by the engine with the builder's credentials (it gets its own token).
    await docker.getImage(typeImage).tag({ repo: `${address}/${repository}`, tag: '1' });
    try {
      const stream = await docker.getImage(`${address}/${repository}`).push({ tag: '1', authconfig: as('builder') });
      const messages = await new Promise<{ error?: string }[]>((resolve, reject) => docker.modem.followProgress(stream, (err, out: { error?: string }[]) => (err ? reject(err) : resolve(out))));
      assert.deepEqual(messages.filter((m) => m.error), [], `pushing ${typeImage}`);
    } finally {
      await docker.getImage(`${address}/${repository}:1`).remove({ noprune: true });
    }
    amd64Digest = (await served(repository, '1', DOCKER_MANIFEST))!;
    assert.match(amd64Digest, /^sha256:/);
    const amd64Size = Number((await fetch(`http://${address}/v2/${repository}/manifests/1`, { headers: { accept: DOCKER_MANIFEST, authorization: ownToken(['pull']) }, signal: signal() })).headers.get('content-length'));

    // linux/arm64: a one-layer manifest made here, whose config says so and names another entrypoint.
    const layerTar = await tarOf({ 'arm64.txt': 'an arm64 image\n' });
    const layer = await uploadBlob(gzipSync(layerTar));
    const config = await uploadBlob(
      Buffer.from(JSON.stringify({ architecture: 'arm64', variant: 'v8', os: 'linux', config: { Entrypoint: ARM64_ENTRYPOINT }, rootfs: { type: 'layers', diff_ids: [sha256(layerTar)] } })),
    );
    const arm64 = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: DOCKER_MANIFEST,
        config: { mediaType: 'application/vnd.docker.container.image.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', ...layer }],
      }),
    );
    await putManifest(sha256(arm64), DOCKER_MANIFEST, arm64);

    // The same two platforms as a Docker manifest list and as an OCI index, arm64 first.
    for (const [tag, mediaType] of [['multi-docker', DOCKER_LIST], ['multi-oci', OCI_INDEX]] as const) {
      const index = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType,
          manifests: [
            { mediaType: DOCKER_MANIFEST, digest: sha256(arm64), size: arm64.length, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
            { mediaType: DOCKER_MANIFEST, digest: amd64Digest, size: amd64Size, platform: { architecture: 'amd64', os: 'linux' } },
          ],
        }),
      );
      await putManifest(tag, mediaType, index);
      indexes[tag] = sha256(index);
    }
  });

  after(async () => {
    for (const ref of made) await docker.getImage(ref).remove().catch(() => undefined);
    await registry?.stop();
    await issuer?.stop();
  });

  describe('the build\'s credential check (checkCredentials)', () => {
    const target = () => ({ registry: address, repository: `glider-gun/templates/check-${id}` });

    it('takes the credentials of a user who may push, asking the token service for pull and push', async () => {
      const before = issuer.issued.length;
      await checkCredentials(target(), as('builder'), { signal: signal() });
      assert.deepEqual(issuer.issued.slice(before), [
        { subject: 'builder', scopes: [`repository:${target().repository}:pull,push`], access: [{ type: 'repository', name: target().repository, actions: ['pull', 'push'] }] },
      ]);
    });

    it('refuses a wrong password, saying the token service refused it', async () => {
      await assert.rejects(checkCredentials(target(), as('builder', 'not-the-password'), { signal: signal() }), (err: Error) => {
        assert.ok(err instanceof CredentialsRefusedError, String(err));
        assert.match(err.message, /token service refuses the credentials: 401/);
        return true;
      });
    });

    it('refuses a user whose token only pulls: the registry will not take an upload with it', async () => {
      await assert.rejects(checkCredentials(target(), as('reader'), { signal: signal() }), (err: Error) => {
        assert.ok(err instanceof CredentialsRefusedError, String(err));
        assert.equal(err.message, `${address} does not let reader push to ${target().repository}: 401 Unauthorized (insufficient_scope)`);
        return true;
      });
    });
  });

  describe('reading a digest back (manifestDigest)', () => {
    it('reads the digest of a pushed image with a token', async () => {
      assert.equal(await manifestDigest({ registry: address, repository, tag: '1' }, { auth: as('reader'), signal: signal() }), amd64Digest);
    });

    it('answers the digest of the index itself for a multi-arch tag, not of one platform\'s image', async () => {
      for (const [tag, digest] of Object.entries(indexes)) {
        assert.equal(await manifestDigest({ registry: address, repository, tag }, { auth: as('reader'), signal: signal() }), digest, tag);
      }
    });
  });

  describe('reading an image\'s configuration (the Kubernetes adapter\'s RegistryClient)', () => {
    const client = (auth?: RegistryAuth) => new RegistryClient([], new RegistryCredentials(auth ? [auth] : []));

    it('reads the entrypoint and the digest of an image with a token', async () => {
      assert.deepEqual(await client(as('reader')).imageConfig(`${address}/${repository}:1`), { entrypoint, cmd, digest: amd64Digest });
    });

    it('says whether credentials are missing or refused', async () => {
      await assert.rejects(client().imageConfig(`${address}/${repository}:1`), (err: Error) => {
        assert.ok(err instanceof ImageAccessDeniedError, String(err));
        assert.match(err.message, new RegExp(`registry ${address} wants credentials and none are configured for it`));
        return true;
      });
      await assert.rejects(client(as('reader', 'not-the-password')).imageConfig(`${address}/${repository}:1`), (err: Error) => {
        assert.ok(err instanceof ImageAccessDeniedError, String(err));
        assert.match(err.message, new RegExp(`registry ${address} refuses the credentials of reader \\(the registry's token service refuses the credentials: 401`));
        return true;
      });
    });

    it('picks linux/amd64 from an index that lists arm64 first, and answers the index\'s digest', async () => {
      for (const [tag, digest] of Object.entries(indexes)) {
        assert.deepEqual(await client(as('reader')).imageConfig(`${address}/${repository}:${tag}`), { entrypoint, cmd, digest }, tag);
      }
    });
  });

  describe('a template build through the Docker engine', () => {
    const source = async () => gzipSync(await tarOf({ 'run.sh': '#!/bin/sh\necho "template says: $*"\n' }, 0o755));
    const build = async (user: keyof typeof users) => {
      const templateName = `token-${user}-${id}`;
      const tag = `${address}/glider-gun/templates/${templateName}:1`;
      made.push(tag);
      // The base from the token registry by digest, not on the engine under that name: the engine pulls it with the credentials.
      const base = `${address}/${repository}@${amd64Digest}`;
      made.push(base);
      await docker.getImage(base).remove().catch(() => undefined);
      const dockerfile = generateDockerfile({ baseImage: base, templateName, version: 1, sourceDigest: randomBytes(32).toString('hex'), typeName: 'script', typeVersion: 1 });
      const lines: string[] = [];
      const result = buildAndPushImage(docker, { dockerfile, source: await source(), tag, registryAuth: as(user) }, { onLog: (l) => lines.push(l) });
      return { result, lines, templateName, base };
    };

    it('pulls the base and pushes the template with the builder\'s credentials, and the registry serves it under the tag', async () => {
      const b = await build('builder');
      const pushed = await b.result;
      assert.ok(b.lines.includes(`pulling base image ${b.base}`), b.lines.join('\n'));
      assert.equal(pushed.reference, `${address}/glider-gun/templates/${b.templateName}@${pushed.digest}`);
      assert.equal(await served(`glider-gun/templates/${b.templateName}`, '1', DOCKER_MANIFEST), pushed.digest);
    });

    it('refuses a user who may only pull before building anything, saying so', async () => {
      const b = await build('reader');
      const expected = `cannot push to ${address}/glider-gun/templates/${b.templateName}:1: ${address} does not let reader push to glider-gun/templates/${b.templateName}: 401 Unauthorized (insufficient_scope)`;
      await assert.rejects(b.result, (err: Error) => {
        assert.ok(err instanceof PushFailedError, String(err));
        assert.equal(err.message, expected);
        return true;
      });
      // Nothing was pulled or built: the refusal is the only line.
      assert.deepEqual(b.lines, [`error: ${expected}`]);
    });
  });
});
