import { chmod, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ApplicationFailure } from '@temporalio/common';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import { RunFailure } from '../../core/domain.js';
import { imageRegistryHost, type RegistryCredentials } from '../../core/registry-credentials.js';

export function statusCode(err: unknown): number | undefined {
  return typeof err === 'object' && err !== null && 'statusCode' in err && typeof err.statusCode === 'number' ? err.statusCode : undefined;
}

/** The engine's record of an image, pulled first if the engine lacks it. Pull failures are final (image-unavailable). */
export async function ensureImage(
  docker: Docker,
  image: string,
  credentials: RegistryCredentials,
  progress: (message: string, fields?: Record<string, unknown>) => void,
): Promise<Docker.ImageInspectInfo> {
  try {
    return await docker.getImage(image).inspect();
  } catch (err) {
    if (statusCode(err) !== 404) throw err;
  }
  const auth = credentials.for(imageRegistryHost(image));
  progress('pulling image', { image, ...(auth ? { as: auth.username } : {}) });
  try {
    const stream = await docker.pull(image, auth ? { authconfig: auth } : {});
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve()), () => progress('pulling'));
    });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    // A registry with a token service gives anonymous (or pull-less) clients a token that grants nothing: the
    // engine then says "pull access denied … may require 'docker login'".
    const hint = /unauthorized|authentication required|no basic auth credentials|\b401\b|pull access denied|requested access to the resource is denied/i.test(why)
      ? auth
        ? ` (the registry refuses the credentials of ${auth.username})`
        : ' (the registry wants credentials and none are configured for it: see GLIDERGUN_REGISTRY_AUTH_FILE)'
      : '';
    throw ApplicationFailure.create({
      type: RunFailure.ImageUnavailable,
      message: `image ${image} is not on this node and could not be pulled${hint}: ${why}`,
      nonRetryable: true,
    });
  }
  return docker.getImage(image).inspect();
}

/** Where the runner sits in the runner image (infra/images/pod-runner). */
const RUNNER_IN_IMAGE = '/pod-runner';

/**
 * The runner every Docker run wraps its template with, copied out of the runner image into
 * `<dir>/runner-<image id>` once per image: a file on the node's own disk that run containers bind-mount.
 * Under the work dir, so it is a host path even when the node worker itself runs in a container (which
 * mounts the work dir at the same path).
 */
export async function installRunner(docker: Docker, image: string, dir: string, credentials: RegistryCredentials, progress: (message: string, fields?: Record<string, unknown>) => void): Promise<string> {
  const info = await ensureImage(docker, image, credentials, progress);
  const target = path.join(dir, `runner-${info.Id.replace(/^sha256:/, '').slice(0, 16)}`);
  if (await stat(target).then((s) => s.isFile() && s.size > 0, () => false)) return target;
  await mkdir(dir, { recursive: true });
  const container = await docker.createContainer({ Image: image, Cmd: ['version'], Labels: { 'io.glider-gun.runner-install': 'true' } });
  const partial = `${target}.${process.pid}.tmp`;
  try {
    const archive = await container.getArchive({ path: RUNNER_IN_IMAGE });
    const extract = tar.extract();
    let found = false;
    extract.on('entry', (header, stream, next) => {
      if (header.type !== 'file' || found) {
        stream.resume();
        stream.on('end', next);
        return;
      }
      found = true;
      void (async () => {
        const out = await open(partial, 'w', 0o755);
        try {
          await pipeline(stream, out.createWriteStream());
        } finally {
          await out.close().catch(() => undefined);
        }
      })().then(() => next(), (err: unknown) => next(err instanceof Error ? err : new Error(String(err))));
    });
    await pipeline(archive, extract);
    if (!found) throw new Error(`${image} holds no ${RUNNER_IN_IMAGE}`);
    await chmod(partial, 0o755);
    await rename(partial, target);
  } finally {
    await rm(partial, { force: true });
    await container.remove({ force: true }).catch(() => undefined);
  }
  return target;
}
