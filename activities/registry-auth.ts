/**
 * Speaking to an image registry's HTTP API (distribution v2 / OCI) with or without credentials: where it
 * is, and the two ways a registry asks for them (Basic, or a Bearer token from the realm it names).
 * Shared by the builder (checking a push) and the execution adapters (reading an image's configuration).
 */
import type { RegistryAuth } from '../core/registry-credentials.js';

export const MANIFEST_TYPES = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.index.v1+json',
];

/** Plain HTTP for this machine's registries (as the engine does: 127.0.0.0/8 is insecure by default) and listed ones. */
export function registryBaseUrl(registry: string, insecure: readonly string[] = []): string {
  const host = registry.replace(/:\d+$/, '');
  const plain = insecure.includes(registry) || host === 'localhost' || host === '[::1]' || /^127\./.test(host);
  // Docker Hub's API is not at docker.io.
  return `${plain ? 'http' : 'https'}://${registry === 'docker.io' ? 'registry-1.docker.io' : registry}`;
}

export function basicAuthorization(auth: RegistryAuth): string {
  return `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
}

export class CredentialsRefusedError extends Error {
  override name = 'CredentialsRefusedError';
}

/** A token for a Bearer challenge (`realm`, `service`, `scope`), asked for with the credentials if given. */
export async function bearerToken(challenge: string, auth: RegistryAuth | undefined, signal: AbortSignal): Promise<string> {
  const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]));
  if (!params.realm) throw new Error(`the registry's challenge names no realm: ${challenge}`);
  const url = new URL(params.realm);
  if (params.service) url.searchParams.set('service', params.service);
  if (params.scope) url.searchParams.set('scope', params.scope);
  const res = await fetch(url, { headers: auth ? { authorization: basicAuthorization(auth) } : {}, signal });
  if (res.status === 401 || res.status === 403) throw new CredentialsRefusedError(`the registry's token service refuses the credentials: ${res.status} ${res.statusText}`);
  if (!res.ok) throw new Error(`the registry's token service answered ${res.status} ${res.statusText}`);
  const body = (await res.json()) as { token?: string; access_token?: string };
  const token = body.token ?? body.access_token;
  if (!token) throw new Error('the registry\'s token service gave no token');
  return token;
}

/**
 * The registry gave no usable answer for as long as we were prepared to wait: no connection, no answer in
 * time, or only 5xx/429. Retrying the whole activity would only repeat the wait (a dead registry once took
 * 10 attempts and 66 s to be reported), so callers treat it as final.
 */
export class RegistryUnavailableError extends Error {
  override name = 'RegistryUnavailableError';
}

/** How long one registry call may go unanswered in total, retries included (docs/operators-guide.md promises it). */
export const REGISTRY_PATIENCE_MS = 8_000;
/** One request's own limit: a manifest or a token is small, a registry slower than this is not working. */
const REQUEST_TIMEOUT_MS = 5_000;

/** A 5xx or 429: the registry is there but cannot serve now. */
class NotServing extends Error {}

/** fetch's own failures (no connection, reset, DNS, timeout), as opposed to an answer we did not like. */
function transportFailure(err: unknown): string | undefined {
  if (err instanceof NotServing) return err.message;
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'no answer in time';
  if (err instanceof TypeError && err.message === 'fetch failed') {
    const cause = err.cause as { code?: string; message?: string } | undefined;
    return cause?.message ?? cause?.code ?? err.message;
  }
  return undefined;
}

/**
 * Runs `ask` (one registry call) again while the registry does not answer or answers 5xx/429, with short
 * pauses, until `deadline`; then throws RegistryUnavailableError naming the registry, `what` was asked and why.
 * An answer (any other status) or another failure is returned or thrown as is.
 */
export async function askPatiently<T>(
  registry: string,
  what: string,
  ask: (signal: AbortSignal) => Promise<T>,
  deadline = Date.now() + REGISTRY_PATIENCE_MS,
): Promise<T> {
  const started = Date.now();
  for (let tries = 1; ; tries++) {
    let why: string;
    try {
      return await ask(AbortSignal.timeout(Math.max(250, Math.min(REQUEST_TIMEOUT_MS, deadline - Date.now()))));
    } catch (err) {
      const failure = transportFailure(err);
      if (failure === undefined) throw err;
      why = failure;
    }
    const pause = Math.min(2_000, 250 * 2 ** (tries - 1));
    if (Date.now() + pause >= deadline) {
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      throw new RegistryUnavailableError(`registry ${registry} does not answer (${why}; ${tries} tries in ${seconds}s) for ${what}`);
    }
    await new Promise((r) => setTimeout(r, pause));
  }
}

/** fetch, but a 5xx or 429 counts as no answer (askPatiently asks again). */
export async function fetchServed(url: string | URL, init: RequestInit): Promise<Response> {
  const res = await fetch(url, init);
  if (res.status >= 500 || res.status === 429) {
    await res.body?.cancel();
    throw new NotServing(`it answered ${res.status} ${res.statusText}`.trim());
  }
  return res;
}
