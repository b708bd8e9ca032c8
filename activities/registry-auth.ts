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
