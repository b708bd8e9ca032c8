/**
 * Asks a registry (distribution v2 / OCI) which manifest a tag points at, with the pusher's credentials:
 * the digest the engine reports after a push is checked against what the registry actually serves.
 */

export interface RegistryAuth {
  username: string;
  password: string;
  serveraddress: string;
}

const MANIFEST_TYPES = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.index.v1+json',
].join(', ');

/** Plain HTTP for this machine's registries (as the engine does: 127.0.0.0/8 is insecure by default) and listed ones. */
export function registryBaseUrl(registry: string, insecure: readonly string[] = []): string {
  const host = registry.replace(/:\d+$/, '');
  const plain = insecure.includes(registry) || host === 'localhost' || host === '[::1]' || /^127\./.test(host);
  // Docker Hub's API is not at docker.io.
  return `${plain ? 'http' : 'https'}://${registry === 'docker.io' ? 'registry-1.docker.io' : registry}`;
}

function basic(auth: RegistryAuth): string {
  return `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
}

/** A token for a Bearer challenge (`realm`, `service`, `scope`), asked for with the credentials if given. */
async function bearerToken(challenge: string, auth: RegistryAuth | undefined, signal: AbortSignal): Promise<string> {
  const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]));
  if (!params.realm) throw new Error(`the registry's challenge names no realm: ${challenge}`);
  const url = new URL(params.realm);
  if (params.service) url.searchParams.set('service', params.service);
  if (params.scope) url.searchParams.set('scope', params.scope);
  const res = await fetch(url, { headers: auth ? { authorization: basic(auth) } : {}, signal });
  if (res.status === 401 || res.status === 403) throw new CredentialsRefusedError(`the registry's token service refuses the credentials: ${res.status} ${res.statusText}`);
  if (!res.ok) throw new Error(`the registry's token service answered ${res.status} ${res.statusText}`);
  const body = (await res.json()) as { token?: string; access_token?: string };
  const token = body.token ?? body.access_token;
  if (!token) throw new Error('the registry\'s token service gave no token');
  return token;
}

export class CredentialsRefusedError extends Error {
  override name = 'CredentialsRefusedError';
}

/**
 * Asks whether the registry takes these credentials for pushing to the repository: `GET /v2/` with them
 * (Basic), or a token for `repository:<name>:pull,push` from the realm it names (Bearer). Throws
 * CredentialsRefusedError only when the registry or its token service says no (401/403); an unreachable
 * registry is for the push to report. The engine retries a refused layer upload for most of a minute
 * before it gives up, so wrong credentials are better found out before.
 */
export async function checkCredentials(
  ref: { registry: string; repository: string },
  auth: RegistryAuth,
  opts: { insecure?: readonly string[]; signal: AbortSignal },
): Promise<void> {
  const url = `${registryBaseUrl(ref.registry, opts.insecure)}/v2/`;
  let res: Response;
  try {
    res = await fetch(url, { headers: { authorization: basic(auth) }, signal: opts.signal });
  } catch {
    return;
  }
  if (res.status !== 401 && res.status !== 403) return;
  const challenge = res.headers.get('www-authenticate') ?? '';
  if (res.status === 401 && /^bearer /i.test(challenge)) {
    const scoped = /scope="/.test(challenge) ? challenge : `${challenge},scope="repository:${ref.repository}:pull,push"`;
    try {
      await bearerToken(scoped, auth, opts.signal);
      return;
    } catch (err) {
      if (err instanceof CredentialsRefusedError) throw err;
      return;
    }
  }
  throw new CredentialsRefusedError(`${ref.registry} refuses the credentials of ${auth.username}: ${res.status} ${res.statusText}`);
}

/** `Docker-Content-Digest` of `<registry>/<repository>:<tag>`'s manifest (a HEAD request). */
export async function manifestDigest(
  ref: { registry: string; repository: string; tag: string },
  opts: { auth?: RegistryAuth | undefined; insecure?: readonly string[]; signal: AbortSignal },
): Promise<string> {
  const url = `${registryBaseUrl(ref.registry, opts.insecure)}/v2/${ref.repository}/manifests/${encodeURIComponent(ref.tag)}`;
  const head = (authorization?: string) =>
    fetch(url, { method: 'HEAD', headers: { accept: MANIFEST_TYPES, ...(authorization ? { authorization } : {}) }, signal: opts.signal });
  let res = await head();
  if (res.status === 401) {
    const challenge = res.headers.get('www-authenticate') ?? '';
    if (/^bearer /i.test(challenge)) res = await head(`Bearer ${await bearerToken(challenge, opts.auth, opts.signal)}`);
    else if (opts.auth) res = await head(basic(opts.auth));
  }
  if (!res.ok) throw new Error(`${url} answered ${res.status} ${res.statusText}`);
  const digest = res.headers.get('docker-content-digest');
  if (!digest) throw new Error(`${url} answered without a Docker-Content-Digest header`);
  return digest;
}
