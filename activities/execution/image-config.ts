/**
 * Reads an image's configuration (its ENTRYPOINT) from the registry that holds it, over the registry API
 * (distribution v2 / OCI). The Kubernetes adapter needs the entrypoint because the pod-runner wraps it: a pod
 * can only replace an image's entrypoint, not run something around it.
 */

export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  /** The manifest's digest: the image the cluster will run, whatever the tag points at later. */
  digest: string;
}

export class ImageNotFoundError extends Error {
  override name = 'ImageNotFoundError';
}

const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];

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
    private readonly timeoutMs = 20_000,
  ) {}

  private baseUrl(registry: string): string {
    const host = registry.replace(/:\d+$/, '');
    const plain = this.insecure.includes(registry) || host === 'localhost' || /^127\./.test(host);
    return `${plain ? 'http' : 'https'}://${registry}`;
  }

  async imageConfig(image: string): Promise<ImageConfig> {
    const cached = this.cache.get(image);
    if (cached && image.includes('@')) return cached;
    const ref = parseImageReference(image);
    const base = `${this.baseUrl(ref.registry)}/v2/${ref.repository}`;
    let token: string | undefined;
    const get = async (url: string, accept: string): Promise<Response> => {
      const headers: Record<string, string> = { accept };
      if (token) headers.authorization = `Bearer ${token}`;
      let res = await fetch(url, { headers, signal: AbortSignal.timeout(this.timeoutMs) });
      if (res.status === 401 && !token) {
        // Anonymous pull of a public image: the registry names where to get a token.
        token = await anonymousToken(res.headers.get('www-authenticate'), this.timeoutMs);
        if (token) res = await fetch(url, { headers: { ...headers, authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(this.timeoutMs) });
      }
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
}

async function anonymousToken(challenge: string | null, timeoutMs: number): Promise<string | undefined> {
  if (!challenge?.toLowerCase().startsWith('bearer ')) return undefined;
  const params = Object.fromEntries([...challenge.slice(7).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
  if (!params.realm) return undefined;
  const url = new URL(params.realm);
  if (params.service) url.searchParams.set('service', params.service);
  if (params.scope) url.searchParams.set('scope', params.scope);
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) return undefined;
  const body = (await res.json()) as { token?: string; access_token?: string };
  return body.token ?? body.access_token;
}
