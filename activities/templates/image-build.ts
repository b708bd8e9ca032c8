/**
 * Builds a template image on the local Docker engine and pushes it to the registry: the base image
 * pulled if absent, the context streamed (build-context.ts), every line of the engine's output handed to
 * onLog as it comes, the pushed manifest's digest checked against the registry, and the engine left as
 * it was found (only the base image stays).
 *
 * The classic builder is used (`version: '1'`): the engine has no BuildKit frontend images to pull. It
 * commits an image per step, and on a cancel finishes the step in progress after the client has gone:
 * build-leftovers.ts finds and removes those images.
 */
import type Docker from 'dockerode';
import { parseImageReference } from '../execution/image-config.js';
import { imageRegistryHost, type RegistryCredentials } from '../../core/registry-credentials.js';
import { templateBuildContext } from './build-context.js';
import { BuildTrace, removeBuildLeftovers, sweepAfterCancel, type BuildIdentity } from './build-leftovers.js';
import { baseImagesOf, committedSteps, isImageReference, labelsOf } from './dockerfile.js';
import { engineError, engineMessages, LogLines, type EngineMessage } from './engine-stream.js';
import { checkCredentials, CredentialsRefusedError, manifestDigest, type RegistryAuth } from './registry.js';
import { statusCode } from '../execution/docker-images.js';

export type { RegistryAuth } from './registry.js';

/** The build failed: a base image that cannot be had, a bad source archive, a step the engine refused. */
export class BuildFailedError extends Error {
  override name = 'BuildFailedError';
  readonly code = 'BUILD_FAILED';
}

/** The registry did not take the image (down, unauthorized, read-only, a name it refuses), or serves another. */
export class PushFailedError extends Error {
  override name = 'PushFailedError';
  readonly code = 'PUSH_FAILED';
}

/** Stopped by the caller's signal (BUILD_CANCELLED) or by opts.timeoutMs (BUILD_TIMEOUT). */
export class BuildAbortedError extends Error {
  override name = 'AbortError';
  constructor(
    readonly code: 'BUILD_CANCELLED' | 'BUILD_TIMEOUT',
    message: string,
  ) {
    super(message);
  }
}

export type ImageBuildErrorCode = BuildFailedError['code'] | PushFailedError['code'] | BuildAbortedError['code'];

export interface ImageBuildInput {
  dockerfile: string;
  /** tar + gzip of the template's files: they go to `template/` in the context. */
  source: Buffer;
  /** `<registry>/<repository>:<tag>`, e.g. 127.0.0.1:5000/glider-gun/templates/<name>:<version> */
  tag: string;
  /** For the push, and for pulling base images from the same registry. */
  registryAuth?: RegistryAuth | undefined;
  /** For pulling base images from other registries (GLIDERGUN_REGISTRY_AUTH_FILE). */
  pullCredentials?: RegistryCredentials | undefined;
}

export interface ImageBuildOptions {
  signal?: AbortSignal | undefined;
  /** Each line of the build's output (and of pulls and the push), as it comes. */
  onLog: (line: string) => void;
  timeoutMs?: number | undefined;
  /** Registries spoken to over plain HTTP when reading the manifest back (loopback ones always are). */
  insecureRegistries?: readonly string[] | undefined;
}

export interface PushedImage {
  /** The local image's id (sha256:…), gone from the engine by the time this returns. */
  imageId: string;
  /** sha256:… of the pushed manifest, as the registry serves it. */
  digest: string;
  /** `<repository>@<digest>`: the image, whatever the tag points at later. */
  reference: string;
}

/**
 * How long the engine may take, after a cancel, to finish the step it is in: 10 s, and a COPY of the
 * template's files at a pessimistic 20 MB/s. Waited out only when the engine stops before the last step.
 */
const stepQuietMs = (contextBytes: number) => 10_000 + contextBytes / 20_000;
const REGISTRY_TIMEOUT_MS = 30_000;


/** The engine's own words from a dockerode error ("(HTTP code 404) unexpected - …" otherwise). */
function engineMessage(err: unknown): string {
  const json = typeof err === 'object' && err !== null && 'json' in err ? (err.json as { message?: unknown } | null) : null;
  if (typeof json?.message === 'string') return json.message;
  return err instanceof Error ? err.message : String(err);
}

/** The caller's signal and the timeout as one signal whose reason is the error to throw. */
class Stop {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly onAbort = () => this.controller.abort(new BuildAbortedError('BUILD_CANCELLED', 'the image build was cancelled'));

  constructor(
    private readonly caller: AbortSignal | undefined,
    timeoutMs: number | undefined,
  ) {
    if (caller?.aborted) this.onAbort();
    caller?.addEventListener('abort', this.onAbort, { once: true });
    if (timeoutMs !== undefined) {
      this.timer = setTimeout(() => this.controller.abort(new BuildAbortedError('BUILD_TIMEOUT', `the image build took longer than ${timeoutMs} ms`)), timeoutMs);
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.controller.signal.aborted;
  }

  get reason(): BuildAbortedError {
    return this.controller.signal.reason as BuildAbortedError;
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.caller?.removeEventListener('abort', this.onAbort);
  }
}

/** Reads an engine progress stream to its end, destroying it (which makes the engine stop) when stopped. */
async function follow(stream: NodeJS.ReadableStream, stop: Stop, onMessage: (m: EngineMessage) => void): Promise<void> {
  const destroy = () => (stream as NodeJS.ReadableStream & { destroy(): void }).destroy();
  stop.signal.addEventListener('abort', destroy, { once: true });
  try {
    if (stop.aborted) destroy();
    for await (const m of engineMessages(stream as AsyncIterable<Buffer>)) onMessage(m);
  } finally {
    stop.signal.removeEventListener('abort', destroy);
  }
  if (stop.aborted) throw stop.reason;
}

/** Removes an image by name or id; gone already (404) or in use (409) is left be. */
async function removeImage(docker: Docker, name: string, noprune = false): Promise<void> {
  await docker
    .getImage(name)
    .remove({ noprune })
    .catch((err: unknown) => {
      if (statusCode(err) !== 404 && statusCode(err) !== 409) throw err;
    });
}

interface Context {
  docker: Docker;
  input: ImageBuildInput;
  opts: ImageBuildOptions;
  stop: Stop;
  log: LogLines;
  trace: BuildTrace;
}

/** Pulls each base image that is not here; answers their ids. A base with ONBUILD triggers is refused. */
async function ensureBaseImages({ docker, input, stop, log }: Context): Promise<string[]> {
  const ids: string[] = [];
  for (const image of baseImagesOf(input.dockerfile)) {
    let info = await docker
      .getImage(image)
      .inspect()
      .catch((err: unknown) => {
        if (statusCode(err) === 404) return undefined;
        throw err;
      });
    if (!info) {
      log.line(`pulling base image ${image}`);
      const host = imageRegistryHost(image);
      const auth = input.registryAuth?.serveraddress === host ? input.registryAuth : input.pullCredentials?.for(host);
      let failure: string | undefined;
      try {
        const stream = await docker.pull(image, { abortSignal: stop.signal, ...(auth ? { authconfig: auth } : {}) });
        await follow(stream, stop, (m) => {
          log.message(m);
          failure ??= engineError(m);
        });
      } catch (err) {
        if (stop.aborted || statusCode(err) === undefined) throw err;
        failure = engineMessage(err);
        log.line(`error: ${failure}`);
      }
      if (failure) throw new BuildFailedError(`the base image ${image} could not be pulled: ${failure}`);
      info = await docker.getImage(image).inspect();
    }
    // A trigger would run its instruction (RUN included) in this build: template content is data only.
    if (info.Config.OnBuild?.length) {
      const message = `the base image ${image} has ONBUILD triggers (${info.Config.OnBuild.join('; ')}), which template builds do not run`;
      log.line(`error: ${message}`);
      throw new BuildFailedError(message);
    }
    ids.push(info.Id);
  }
  return ids;
}

async function build(ctx: Context, id: BuildIdentity): Promise<string> {
  const { docker, input, stop, log, trace } = ctx;
  let contextBytes = 0;
  const context = templateBuildContext(input.dockerfile, input.source, (n) => (contextBytes += n));
  let contextError: Error | undefined;
  context.on('error', (err: Error) => (contextError ??= err));
  const sourceFailure = () => new BuildFailedError(`the template's source archive cannot be used: ${contextError!.message}`);
  let stream: NodeJS.ReadableStream;
  try {
    stream = await docker.buildImage(context, {
      t: input.tag,
      version: '1',
      // Every build afresh: the intermediate images of a cache would stay on the engine, and two builds
      // sharing one could remove it from under each other.
      nocache: true,
      rm: true,
      forcerm: true,
      // Nothing in these builds needs a network (there is no RUN); an ONBUILD that slipped by gets none.
      networkmode: 'none',
      abortSignal: stop.signal,
    });
  } catch (err) {
    context.destroy();
    if (stop.aborted) throw stop.reason;
    if (contextError) throw sourceFailure();
    if (statusCode(err) === undefined) throw err;
    log.line(`error: ${engineMessage(err)}`);
    throw new BuildFailedError(engineMessage(err));
  }
  let failure: string | undefined;
  let imageId: string | undefined;
  try {
    await follow(stream, stop, (m) => {
      log.message(m);
      failure ??= engineError(m);
      if (m.aux?.ID) imageId = m.aux.ID;
    });
  } catch (err) {
    log.flush();
    context.destroy();
    if (stop.aborted) {
      void sweepAfterCancel(docker, trace, id, stepQuietMs(contextBytes)).catch(() => undefined);
      throw stop.reason;
    }
    await removeBuildLeftovers(docker, trace, id).catch(() => undefined);
    if (contextError) throw sourceFailure();
    throw err;
  }
  log.flush();
  if (failure || contextError || !imageId) {
    await removeBuildLeftovers(docker, trace, id).catch(() => undefined);
    if (contextError) throw sourceFailure();
    throw new BuildFailedError(failure ?? 'the engine ended the build without reporting an image');
  }
  return imageId;
}

/** The engine relays the registry's answer as it came ("error parsing HTTP 405 response body: …"): says what it means. */
function explainPushFailure(message: string): string {
  const hints: [RegExp, string][] = [
    [/connection refused|no such host|i\/o timeout|network is unreachable|no route to host/i, 'the registry cannot be reached'],
    [/\b405\b|method not allowed|unsupported/i, 'the registry does not accept uploads: read-only?'],
    [/unauthorized|authentication required|no basic auth credentials|\b401\b/i, 'the registry wants other credentials'],
    [/denied|forbidden|\b403\b/i, 'the registry refuses these credentials access to this repository'],
    [/name invalid|invalid reference|repository name/i, 'the registry refuses the name'],
  ];
  const hint = hints.find(([pattern]) => pattern.test(message))?.[1];
  return hint ? `${message} (${hint})` : message;
}

async function push(ctx: Context, target: { repository: string; tag: string }): Promise<string> {
  const { docker, input, stop, log } = ctx;
  log.line(`pushing ${input.tag}`);
  let failure: string | undefined;
  let digest: string | undefined;
  try {
    const stream = await docker.getImage(target.repository).push({
      tag: target.tag,
      abortSignal: stop.signal,
      ...(input.registryAuth ? { authconfig: input.registryAuth } : {}),
    });
    await follow(stream, stop, (m) => {
      log.message(m);
      failure ??= engineError(m);
      if (m.aux?.Digest) digest = m.aux.Digest;
    });
  } catch (err) {
    if (stop.aborted || statusCode(err) === undefined) throw err;
    failure = engineMessage(err);
    log.line(`error: ${failure}`);
  }
  if (failure) throw new PushFailedError(`the registry did not take ${input.tag}: ${explainPushFailure(failure)}`);
  if (!digest) throw new PushFailedError(`the engine pushed ${input.tag} without reporting its digest`);
  return digest;
}

/** Wrong credentials fail the build at once, rather than after the engine's retries of the upload and a build for nothing. */
async function preflight(ctx: Context, target: { registry: string; repository: string }, auth: RegistryAuth): Promise<void> {
  try {
    await checkCredentials(target, auth, { insecure: ctx.opts.insecureRegistries ?? [], signal: AbortSignal.any([ctx.stop.signal, AbortSignal.timeout(REGISTRY_TIMEOUT_MS)]) });
  } catch (err) {
    if (!(err instanceof CredentialsRefusedError)) throw err;
    const message = `cannot push to ${ctx.input.tag}: ${err.message}`;
    ctx.log.line(`error: ${message}`);
    throw new PushFailedError(message);
  }
}

/** Checks that the registry serves the pushed manifest under the tag. */
async function verify(ctx: Context, target: { registry: string; repository: string; tag: string }, digest: string): Promise<void> {
  const { input, opts, stop, log } = ctx;
  let served: string;
  try {
    served = await manifestDigest(target, {
      auth: input.registryAuth,
      insecure: opts.insecureRegistries ?? [],
      signal: AbortSignal.any([stop.signal, AbortSignal.timeout(REGISTRY_TIMEOUT_MS)]),
    });
  } catch (err) {
    if (stop.aborted) throw stop.reason;
    const message = `pushed ${input.tag}, but its manifest could not be read back from the registry: ${err instanceof Error ? err.message : String(err)}`;
    log.line(`error: ${message}`);
    throw new PushFailedError(message);
  }
  if (served !== digest) {
    const message = `pushed ${input.tag} as ${digest}, but the registry serves ${served} under that tag (pushed to concurrently?)`;
    log.line(`error: ${message}`);
    throw new PushFailedError(message);
  }
  log.line(`pushed ${target.registry}/${target.repository}@${digest}`);
}

export async function buildAndPushImage(docker: Docker, input: ImageBuildInput, opts: ImageBuildOptions): Promise<PushedImage> {
  // Refused here rather than by the engine at the start of the build, where it would read as a build failure.
  if (!isImageReference(input.tag) || input.tag.includes('@')) throw new PushFailedError(`cannot push to ${JSON.stringify(input.tag)}: not an image reference with a tag`);
  let target: ReturnType<typeof parseImageReference>;
  try {
    target = parseImageReference(input.tag);
  } catch (err) {
    throw new PushFailedError(`cannot push to ${input.tag}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const pushTarget = { registry: target.registry, repository: target.repository, tag: target.reference };
  const stop = new Stop(opts.signal, opts.timeoutMs);
  const trace = new BuildTrace();
  const log = new LogLines((line) => {
    trace.line(line);
    opts.onLog(line);
  });
  const ctx: Context = { docker, input, opts, stop, log, trace };
  try {
    if (stop.aborted) throw stop.reason;
    if (input.registryAuth) await preflight(ctx, pushTarget, input.registryAuth);
    const startedAt = Date.now();
    const bases = new Set(await ensureBaseImages(ctx));
    // A tag left by an attempt that died before removing it would leave its image dangling once retagged.
    await removeImage(docker, input.tag);
    const id: BuildIdentity = { labels: labelsOf(input.dockerfile), tag: input.tag, startedAt, bases, steps: committedSteps(input.dockerfile) };
    const imageId = await build(ctx, id);
    try {
      const digest = await push(ctx, { repository: `${pushTarget.registry}/${pushTarget.repository}`, tag: pushTarget.tag });
      await verify(ctx, pushTarget, digest);
      return { imageId, digest, reference: `${pushTarget.registry}/${pushTarget.repository}@${digest}` };
    } finally {
      // The registry holds the image now (or the push failed): the tag goes, and with it the image and the
      // build's intermediate images (pruned with it; removed by id if the engine could not); the base stays.
      // Best effort: the image is in the registry whatever happens here.
      await removeImage(docker, input.tag)
        .then(() => removeBuildLeftovers(docker, trace, id))
        .catch((err: unknown) => log.line(`could not remove the local image ${input.tag}: ${err instanceof Error ? err.message : String(err)}`));
    }
  } catch (err) {
    if (stop.aborted && !(err instanceof BuildFailedError || err instanceof PushFailedError)) throw stop.reason;
    throw err;
  } finally {
    stop.dispose();
  }
}
