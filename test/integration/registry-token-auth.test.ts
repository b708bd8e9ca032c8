/**
 * A registry that wants Bearer tokens, as production registries do: Debian's docker-registry (distribution
 * 2.8) with `auth: token`, verifying every token of a token service started here (test/support/token-issuer.ts).
 * Through it: the build's credential check and digest read-back (activities/templates/registry.ts), a real
 * template build through the Docker engine, and the image configuration the Kubernetes adapter reads
 * (activities/execution/image-config.ts), also of a multi-arch index that lists arm64 before amd64.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import Docker from 'dockerode';
import { ImageAccessDeniedError, RegistryClient } from '../../activities/execution/image-config.js';
import { generateDockerfile } from '../../activities/templates/dockerfile.js';
import { buildAndPushImage, PushFailedError } from '../../activities/templates/image-build.js';
import { checkCredentials, CredentialsRefusedError, manifestDigest } from '../../activities/templates/registry.js';
import { RegistryCredentials, type RegistryAuth } from '../../core/registry-credentials.js';
import { scriptImage } from '../support/images.js';
import { tempDirs } from '../support/temp-dirs.js';
import type { TokenIssuer } from '../support/token-issuer.js';
import { DOCKER_MANIFEST, pushMultiArch, pushWithEngine, startTokenRegistry, tarOf, type TokenRegistry } from '../support/token-registry.js';

const signal = () => AbortSignal.timeout(15_000);

describe('a registry that wants Bearer tokens from a token service (distribution 2.8 verifying them)', () => {
  const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
  const dirs = tempDirs('gg-registry-token-');
  const id = randomBytes(4).toString('hex');
  let reg: TokenRegistry;
  let issuer: TokenIssuer;
  let address: string;
  const users = { builder: { password: 'builder-pw', actions: ['pull', 'push'] as const }, reader: { password: 'reader-pw', actions: ['pull'] as const } };
  const as = (user: keyof typeof users, password = users[user].password): RegistryAuth => ({ username: user, password, serveraddress: address });
  /** busybox with ENTRYPOINT /entrypoint.sh, local; also in the token registry as `repository`:1 (linux/amd64). */
  let typeImage: string;
  let entrypoint: string[];
  let cmd: string[];
  const repository = `glider-gun/token-type-${id}`;
  let amd64Digest: string;
  /** The multi-arch tags, arm64 listed first: tag → the index's digest (of the bytes put). */
  let indexes: Record<string, string>;
  const made: string[] = [];

  /** What the registry serves for a manifest reference, asked with the test's own token. */
  const served = async (repo: string, reference: string, accept: string) => {
    const res = await fetch(`http://${address}/v2/${repo}/manifests/${reference}`, { method: 'HEAD', headers: { accept, authorization: reg.authorization(repo, ['pull']) }, signal: signal() });
    assert.equal(res.status, 200, `HEAD ${repo}:${reference}`);
    return res.headers.get('docker-content-digest');
  };

  before(async () => {
    reg = await startTokenRegistry(dirs, users);
    ({ issuer, address } = reg);
    typeImage = await scriptImage(docker, '#!/bin/sh\n# a template type for the token registry tests\nexec /template/bin/run.sh "$@"\n');
    const { Config } = await docker.getImage(typeImage).inspect();
    entrypoint = Config.Entrypoint as string[];
    cmd = Config.Cmd ?? [];
    assert.deepEqual(entrypoint, ['/entrypoint.sh']);
    // linux/amd64: the type image, pushed by the engine with the builder's credentials; arm64 made beside it.
    await pushWithEngine(docker, typeImage, { repository, tag: '1' }, as('builder'));
    ({ amd64Digest, indexes } = await pushMultiArch(reg, repository, '1'));
    assert.equal(await served(repository, '1', DOCKER_MANIFEST), amd64Digest);
  });

  after(async () => {
    for (const ref of made) await docker.getImage(ref).remove().catch(() => undefined);
    await reg?.stop();
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
