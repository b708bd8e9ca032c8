/**
 * Debian's docker-registry with `auth: token`, trusting the token service of token-issuer.ts, and what the
 * tests put in it: images pushed by the Docker engine with a user's credentials, and multi-arch indexes
 * (an arm64 image made here over the registry's HTTP API, listed before the real linux/amd64 one).
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import type { RegistryAuth } from '../../core/registry-credentials.js';
import { startImageRegistry, type ImageRegistry } from '../../infra/dev/registry.js';
import { startTokenIssuer, type TokenIssuer, type TokenUser } from './token-issuer.js';

export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
/** The entrypoint the arm64 image's configuration names: no real image has it. */
export const ARM64_ENTRYPOINT = ['/arm64-entrypoint'];

export const sha256 = (data: Buffer | string): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const signal = () => AbortSignal.timeout(15_000);

/** tar of the given files, uncompressed. */
export async function tarOf(files: Record<string, string>, mode = 0o644): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, body] of Object.entries(files)) pack.entry({ name, mode, mtime: new Date(0) }, body);
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const p of pack as AsyncIterable<Buffer>) parts.push(p);
  return Buffer.concat(parts);
}

export interface TokenRegistry {
  /** host:port on 127.0.0.1, plain HTTP. */
  address: string;
  issuer: TokenIssuer;
  /** `Bearer …` for `actions` on `repository`, straight from the issuer: for a test's own requests, not the product's. */
  authorization(repository: string, actions: string[]): string;
  stop(): Promise<void>;
}

/**
 * The token service and the registry, in `dirs` (two fresh folders). Fails unless the registry takes the
 * service's tokens and refuses the same token signed by a key it does not trust: the registry verifies.
 */
export async function startTokenRegistry(dirs: { fresh(): Promise<string> }, users: Record<string, TokenUser>): Promise<TokenRegistry> {
  const issuer = await startTokenIssuer({ dir: await dirs.fresh(), users });
  let registry: ImageRegistry;
  try {
    registry = await startImageRegistry({
      dir: await dirs.fresh(),
      tokenAuth: { realm: issuer.realm, service: issuer.service, issuer: issuer.issuer, rootCertBundle: issuer.certFile },
      say: () => undefined,
    });
  } catch (err) {
    await issuer.stop();
    throw err;
  }
  const address = registry.address;
  const stop = async () => {
    await registry.stop();
    await issuer.stop();
  };
  const status = async (authorization?: string) => {
    const res = await fetch(`http://${address}/v2/`, { headers: authorization ? { authorization } : {}, signal: signal() });
    return `${res.status} ${res.headers.get('www-authenticate') ?? ''}`.trim();
  };
  const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const seen = [await status(), await status(`Bearer ${issuer.mint('builder', [])}`), await status(`Bearer ${issuer.mint('builder', [], stranger)}`)];
  const expected = [`401 Bearer realm="${issuer.realm}",service="${issuer.service}"`, '200', `401 Bearer realm="${issuer.realm}",service="${issuer.service}",error="invalid_token"`];
  if (JSON.stringify(seen) !== JSON.stringify(expected)) {
    await stop();
    throw new Error(`the token registry does not verify as it should: without a token, with the issuer's, with a stranger's: ${JSON.stringify(seen)}`);
  }
  return {
    address,
    issuer,
    authorization: (repository, actions) => `Bearer ${issuer.mint('test', [{ type: 'repository', name: repository, actions }])}`,
    stop,
  };
}

/** Pushes a local image to `<registry>/<repository>:<tag>` through the engine with `auth` (the engine gets its own token); untags it after. */
export async function pushWithEngine(docker: Docker, local: string, target: { repository: string; tag: string }, auth: RegistryAuth): Promise<void> {
  const name = `${auth.serveraddress}/${target.repository}`;
  await docker.getImage(local).tag({ repo: name, tag: target.tag });
  try {
    const stream = await docker.getImage(name).push({ tag: target.tag, authconfig: auth });
    const messages = await new Promise<{ error?: string }[]>((resolve, reject) =>
      docker.modem.followProgress(stream, (err: Error | null, out: { error?: string }[]) => (err ? reject(err) : resolve(out))),
    );
    const failed = messages.find((m) => m.error);
    if (failed) throw new Error(`pushing ${local} to ${name}:${target.tag}: ${failed.error}`);
  } finally {
    await docker.getImage(`${name}:${target.tag}`).remove({ noprune: true });
  }
}

/**
 * Next to `<repository>:<amd64Tag>` (a linux/amd64 image already there): a one-layer linux/arm64 image whose
 * configuration names ARM64_ENTRYPOINT, and the two listed arm64 first as a Docker manifest list
 * (`multi-docker`) and as an OCI index (`multi-oci`). Answers the amd64 image's digest and each index's
 * (the digest of the bytes put).
 */
export async function pushMultiArch(reg: TokenRegistry, repository: string, amd64Tag: string): Promise<{ amd64Digest: string; indexes: Record<'multi-docker' | 'multi-oci', string> }> {
  const base = `http://${reg.address}/v2/${repository}`;
  const push = () => reg.authorization(repository, ['pull', 'push']);
  const check = async (res: Response, status: number, what: string) => {
    if (res.status !== status) throw new Error(`${what}: ${res.status} ${await res.text()}`);
  };
  const uploadBlob = async (data: Buffer): Promise<{ digest: string; size: number }> => {
    const digest = sha256(data);
    const started = await fetch(`${base}/blobs/uploads/`, { method: 'POST', headers: { authorization: push() }, signal: signal() });
    await check(started, 202, 'starting an upload');
    const url = new URL(started.headers.get('location')!, base);
    url.searchParams.set('digest', digest);
    await check(await fetch(url, { method: 'PUT', headers: { authorization: push(), 'content-type': 'application/octet-stream' }, body: data, signal: signal() }), 201, `uploading ${digest}`);
    return { digest, size: data.length };
  };
  const putManifest = async (reference: string, mediaType: string, body: Buffer) => {
    const res = await fetch(`${base}/manifests/${reference}`, { method: 'PUT', headers: { authorization: push(), 'content-type': mediaType }, body, signal: signal() });
    await check(res, 201, `putting manifest ${reference}`);
    if (res.headers.get('docker-content-digest') !== sha256(body)) throw new Error(`the registry took ${reference} as ${res.headers.get('docker-content-digest')}, not ${sha256(body)}`);
  };

  const amd64 = await fetch(`${base}/manifests/${amd64Tag}`, { headers: { accept: DOCKER_MANIFEST, authorization: reg.authorization(repository, ['pull']) }, signal: signal() });
  await check(amd64, 200, `reading ${repository}:${amd64Tag}`);
  if (amd64.headers.get('content-type') !== DOCKER_MANIFEST) throw new Error(`${repository}:${amd64Tag} is a ${amd64.headers.get('content-type')}, not a ${DOCKER_MANIFEST}`);
  const amd64Body = Buffer.from(await amd64.arrayBuffer());
  const amd64Digest = sha256(amd64Body);

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

  const indexes = {} as Record<'multi-docker' | 'multi-oci', string>;
  for (const [tag, mediaType] of [['multi-docker', DOCKER_LIST], ['multi-oci', OCI_INDEX]] as const) {
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType,
        manifests: [
          { mediaType: DOCKER_MANIFEST, digest: sha256(arm64), size: arm64.length, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
          { mediaType: DOCKER_MANIFEST, digest: amd64Digest, size: amd64Body.length, platform: { architecture: 'amd64', os: 'linux' } },
        ],
      }),
    );
    await putManifest(tag, mediaType, index);
    indexes[tag] = sha256(index);
  }
  return { amd64Digest, indexes };
}
