/**
 * Reads an image's configuration (its ENTRYPOINT) from the registry that holds it, over the registry API
 * (distribution v2 / OCI). The Kubernetes adapter needs the entrypoint because the pod-runner wraps it: a pod
 * can only replace an image's entrypoint, not run something around it.
 */
import { RegistryCredentials, type RegistryAuth } from '../../core/registry-credentials.js';
import {
  askPatiently,
  basicAuthorization,
  bearerToken,
  CredentialsRefusedError,
  fetchServed,
  MANIFEST_TYPES,
  REGISTRY_PATIENCE_MS,
  registryBaseUrl,
  RegistryUnavailableError,
} from '../registry-auth.js';

export { RegistryUnavailableError };

export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  /** The manifest's digest: the image the cluster will run, whatever the tag points at later. */
  digest: string;
}

export class ImageNotFoundError extends Error {
  override name = 'ImageNotFoundError';
}

/** The registry wants credentials that were not given, or refuses those that were: asking again won't help. */
export class ImageAccessDeniedError extends Error {
  override name = 'ImageAccessDeniedError';
}

export interface ImageReference {
  registry: string;
  repository: string;
  /** A tag or a digest (sha256:…). */
  reference: string;
}

/** `registry.example:5000/team/app:1.2`, `host/app@sha256:…`; Docker Hub's short names are not supported here. */
export function parseImageReference(image: string): ImageReference {
  const slash = image.indexOf('/');
  const first = slash === -1 ? '' : image.slice(0, slash);
  if (slash === -1 || !(first.includes('.') || first.includes(':') || first === 'localhost')) {
    throw new ImageNotFoundError(`image ${image} does not name a registry (expected <registry host>/<repository>[:tag|@digest])`);
  }
  const rest = image.slice(slash + 1);
  const at = rest.indexOf('@');
  if (at !== -1) return { registry: first, repository: rest.slice(0, at), reference: rest.slice(at + 1) };
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) return { registry: first, repository: rest.slice(0, colon), reference: rest.slice(colon + 1) };
  return { registry: first, repository: rest, reference: 'latest' };
}

interface Manifest {
  mediaType?: string;
  manifests?: { digest: string; platform?: { os?: string; architecture?: string } }[];
  config?: { digest: string };
}

export class RegistryClient {
  private readonly cache = new Map<string, ImageConfig>();

  constructor(
    /** Registries spoken to over plain HTTP (besides localhost and 127.0.0.0/8). */
    private readonly insecure: readonly string[] = [],
    private readonly credentials = new RegistryCredentials(),
    /** How long the registry may go unanswered over one inspection before RegistryUnavailableError. */
    private readonly patienceMs = REGISTRY_PATIENCE_MS,
  ) {}

  /**
   * Throws ImageNotFoundError, ImageAccessDeniedError or RegistryUnavailableError (no answer within
   * `patienceMs`, retries included) when asking again would not help; anything else may be worth it.
   */
  async imageConfig(image: string): Promise<ImageConfig> {
    const cached = this.cache.get(image);
    if (cached && image.includes('@')) return cached;
    const ref = parseImageReference(image);
    const base = `${registryBaseUrl(ref.registry, this.insecure)}/v2/${ref.repository}`;
    const auth = this.credentials.for(ref.registry);
    let authorization: string | undefined;
    const deadline = Date.now() + this.patienceMs;
    const get = async (url: string, accept: string): Promise<Response> => {
      const what = `${new URL(url).pathname} of image ${image}`;
      const ask = () =>
        askPatiently(ref.registry, what, (signal) => fetchServed(url, { headers: { accept, ...(authorization ? { authorization } : {}) }, signal }), deadline);
      let res = await ask();
      if (res.status === 401 && !authorization) {
        const challenge = res.headers.get('www-authenticate') ?? '';
        authorization = await askPatiently(ref.registry, `a token for image ${image}`, (signal) => this.authorize(challenge, auth, ref.registry, signal), deadline);
        res = await ask();
      }
      if (res.status === 401 || res.status === 403) throw new ImageAccessDeniedError(denied(ref.registry, auth, `${res.status} ${res.statusText}`));
      return res;
    };

    let res = await get(`${base}/manifests/${ref.reference}`, MANIFEST_TYPES.join(', '));
    if (res.status === 404) throw new ImageNotFoundError(`image ${image} is not in registry ${ref.registry}`);
    if (!res.ok) throw new Error(`registry ${ref.registry} answered ${res.status} for the manifest of ${image}`);
    const digest = res.headers.get('docker-content-digest') ?? ref.reference;
    let manifest = (await res.json()) as Manifest;
    if (manifest.manifests) {
      const linux = manifest.manifests.find((m) => m.platform?.os === 'linux' && m.platform.architecture === 'amd64') ?? manifest.manifests[0];
      if (!linux) throw new ImageNotFoundError(`image ${image} lists no platform`);
      res = await get(`${base}/manifests/${linux.digest}`, MANIFEST_TYPES.join(', '));
      if (!res.ok) throw new Error(`registry ${ref.registry} answered ${res.status} for ${image}'s linux/amd64 manifest`);
      manifest = (await res.json()) as Manifest;
    }
    if (!manifest.config) throw new Error(`the manifest of ${image} has no config`);
    res = await get(`${base}/blobs/${manifest.config.digest}`, 'application/json');
    if (!res.ok) throw new Error(`registry ${ref.registry} answered ${res.status} for ${image}'s config`);
    const config = ((await res.json()) as { config?: { Entrypoint?: string[] | null; Cmd?: string[] | null } }).config ?? {};
    const result = { entrypoint: config.Entrypoint ?? [], cmd: config.Cmd ?? [], digest };
    this.cache.set(image, result);
    return result;
  }

  /** The Authorization a registry's challenge asks for: a Bearer token (anonymous without credentials) or Basic. */
  private async authorize(challenge: string, auth: RegistryAuth | undefined, registry: string, signal: AbortSignal): Promise<string> {
    if (/^bearer /i.test(challenge)) {
      try {
        return `Bearer ${await bearerToken(challenge, auth, signal)}`;
      } catch (err) {
        if (err instanceof CredentialsRefusedError) throw new ImageAccessDeniedError(denied(registry, auth, err.message));
        throw err;
      }
    }
    if (!auth) throw new ImageAccessDeniedError(denied(registry, auth, challenge || '401'));
    return basicAuthorization(auth);
  }
}

function denied(registry: string, auth: RegistryAuth | undefined, why: string): string {
  return auth
    ? `registry ${registry} refuses the credentials of ${auth.username} (${why})`
    : `registry ${registry} wants credentials and none are configured for it (${why}): see GLIDERGUN_REGISTRY_AUTH_FILE`;
}
