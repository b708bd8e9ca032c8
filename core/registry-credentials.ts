/**
 * Credentials for the image registries that hold template images, by registry host: what a node's Docker
 * engine pulls with and what the cluster worker reads an image's configuration with. They come from a
 * Docker config file (the `auths` of `~/.docker/config.json`, which is also the content of a Kubernetes
 * `kubernetes.io/dockerconfigjson` Secret) and from the build registry's own credentials.
 */

export interface RegistryAuth {
  username: string;
  password: string;
  /** The registry's host[:port], as images name it. */
  serveraddress: string;
}

/** `https://index.docker.io/v1/`, `registry.example:5000`, `http://host:5000/v2/` → the host[:port] images name. */
export function registryHostOf(key: string): string {
  const host = key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? 'docker.io' : host;
}

/**
 * The `auths` of a Docker config file: each entry's `auth` (base64 of `user:password`) or its `username`
 * and `password`. Throws with the entry at fault; an entry with neither (an identity token, a helper) is
 * refused rather than silently ignored, since a run would then fail with a less clear error later.
 */
export function parseDockerConfig(text: string): RegistryAuth[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const auths = (parsed as { auths?: unknown } | null)?.auths;
  if (typeof auths !== 'object' || auths === null || Array.isArray(auths)) throw new Error('no "auths" object');
  return Object.entries(auths as Record<string, unknown>).map(([key, value]) => {
    const entry = (value ?? {}) as { auth?: unknown; username?: unknown; password?: unknown };
    let username = typeof entry.username === 'string' ? entry.username : undefined;
    let password = typeof entry.password === 'string' ? entry.password : undefined;
    if (typeof entry.auth === 'string' && entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon <= 0) throw new Error(`auths["${key}"].auth is not base64 of user:password`);
      username = decoded.slice(0, colon);
      password = decoded.slice(colon + 1);
    }
    if (!username || password === undefined) throw new Error(`auths["${key}"] has neither "auth" nor "username" and "password"`);
    return { username, password, serveraddress: registryHostOf(key) };
  });
}

/** The registry an image reference names: its first part when that is a host, else Docker Hub. */
export function imageRegistryHost(image: string): string {
  const first = image.split('/')[0]!;
  return image.includes('/') && /[.:]|^localhost$/.test(first) ? first.toLowerCase() : 'docker.io';
}

export class RegistryCredentials {
  private readonly byHost = new Map<string, RegistryAuth>();

  constructor(entries: readonly RegistryAuth[] = []) {
    // The first entry for a host wins, so the build registry's own settings come before the file's.
    for (const e of entries) if (!this.byHost.has(e.serveraddress)) this.byHost.set(e.serveraddress, e);
  }

  /** The credentials for a registry host[:port], if any. */
  for(registry: string): RegistryAuth | undefined {
    return this.byHost.get(registryHostOf(registry));
  }
}
