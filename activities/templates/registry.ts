/**
 * Asks a registry (distribution v2 / OCI) which manifest a tag points at, with the pusher's credentials:
 * the digest the engine reports after a push is checked against what the registry actually serves.
 */
import type { RegistryAuth } from '../../core/registry-credentials.js';
import { basicAuthorization as basic, bearerToken, CredentialsRefusedError, MANIFEST_TYPES, registryBaseUrl } from '../registry-auth.js';

export type { RegistryAuth };
export { CredentialsRefusedError };

/**
 * Asks whether the registry lets these credentials push to the repository: `GET /v2/` with them (Basic), or
 * a token for `repository:<name>:pull,push` from the realm it names (Bearer); then the start of a blob
 * upload with them, cancelled at once. A token service grants what the user may do and no more, so a token
 * that only pulls is given without complaint and only the registry, asked to upload, says no. Throws
 * CredentialsRefusedError only when the registry or its token service says no (401/403); an unreachable
 * registry, or one that takes no uploads at all (read-only), is for the push to report. The engine retries
 * a refused layer upload for most of a minute before it gives up, so refused credentials are better found
 * out before.
 */
export async function checkCredentials(
  ref: { registry: string; repository: string },
  auth: RegistryAuth,
  opts: { insecure?: readonly string[]; signal: AbortSignal },
): Promise<void> {
  const base = registryBaseUrl(ref.registry, opts.insecure);
  let authorization = basic(auth);
  let res: Response;
  try {
    res = await fetch(`${base}/v2/`, { headers: { authorization }, signal: opts.signal });
  } catch {
    return;
  }
  if (res.status === 401 || res.status === 403) {
    const challenge = res.headers.get('www-authenticate') ?? '';
    if (res.status !== 401 || !/^bearer /i.test(challenge)) throw new CredentialsRefusedError(`${ref.registry} refuses the credentials of ${auth.username}: ${res.status} ${res.statusText}`);
    const scoped = /scope="/.test(challenge) ? challenge : `${challenge},scope="repository:${ref.repository}:pull,push"`;
    try {
      authorization = `Bearer ${await bearerToken(scoped, auth, opts.signal)}`;
    } catch (err) {
      if (err instanceof CredentialsRefusedError) throw err;
      return;
    }
  }
  let upload: Response;
  try {
    upload = await fetch(`${base}/v2/${ref.repository}/blobs/uploads/`, { method: 'POST', headers: { authorization }, signal: opts.signal });
  } catch {
    return;
  }
  await upload.body?.cancel();
  const location = upload.headers.get('location');
  if (upload.status === 202 && location) {
    // Nothing was uploaded; the session would otherwise linger in the registry until it purges old uploads.
    await fetch(new URL(location, base), { method: 'DELETE', headers: { authorization }, signal: opts.signal }).then((r) => r.body?.cancel(), () => undefined);
  }
  if (upload.status === 401 || upload.status === 403) {
    const error = /error="([^"]*)"/.exec(upload.headers.get('www-authenticate') ?? '')?.[1];
    throw new CredentialsRefusedError(`${ref.registry} does not let ${auth.username} push to ${ref.repository}: ${upload.status} ${upload.statusText}${error ? ` (${error})` : ''}`);
  }
}

/** `Docker-Content-Digest` of `<registry>/<repository>:<tag>`'s manifest (a HEAD request). */
export async function manifestDigest(
  ref: { registry: string; repository: string; tag: string },
  opts: { auth?: RegistryAuth | undefined; insecure?: readonly string[]; signal: AbortSignal },
): Promise<string> {
  const url = `${registryBaseUrl(ref.registry, opts.insecure)}/v2/${ref.repository}/manifests/${encodeURIComponent(ref.tag)}`;
  const head = (authorization?: string) =>
    fetch(url, { method: 'HEAD', headers: { accept: MANIFEST_TYPES.join(', '), ...(authorization ? { authorization } : {}) }, signal: opts.signal });
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
