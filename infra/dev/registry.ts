/** Debian's docker-registry (distribution) on 127.0.0.1, and pushing local Docker images to a registry. */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { get, run } from './commands.js';
import { startDaemon, waitForDaemon } from './daemons.js';
import { freePort } from './ports.js';
import { say as defaultSay, type Say } from './progress.js';

/**
 * Tags a local Docker image into a registry (host:port) and pushes it; returns the reference to pull.
 * `glider-gun/busybox:abc` becomes `<registry>/glider-gun/busybox:abc`; a registry host in the local name is replaced.
 */
export async function pushImageTo(registry: string, localRef: string): Promise<string> {
  const [first, ...rest] = localRef.split('/');
  const withoutHost = rest.length > 0 && /[.:]|^localhost$/.test(first!) ? rest.join('/') : localRef;
  const target = `${registry}/${withoutHost.includes(':') ? withoutHost : `${withoutHost}:latest`}`;
  await run('docker', ['tag', localRef, target]);
  try {
    await run('docker', ['push', '--quiet', target], { timeoutMs: 300_000 });
  } finally {
    // Only the tag goes: the image stays under its own name, and ports don't pile up in `docker images`.
    await run('docker', ['rmi', target]).catch(() => undefined);
  }
  return target;
}

export interface ImageRegistry {
  /** host:port on 127.0.0.1, plain HTTP (the Docker engine pushes there without configuration). */
  address: string;
  stop(): Promise<void>;
}

/** distribution's `auth: token`: clients get a token from `realm`; the registry trusts the keys of `rootCertBundle` (PEM). */
export interface RegistryTokenAuth {
  realm: string;
  service: string;
  issuer: string;
  rootCertBundle: string;
}

/**
 * Debian's docker-registry (distribution) on 127.0.0.1, storing under `dir` (its images in `dir`/data):
 * the dev stack's, the test cluster's, and one a test starts for itself (`readOnly`: one that refuses pushes;
 * `tokenAuth`: one that wants Bearer tokens).
 */
export async function startImageRegistry(opts: { dir: string; logDir?: string; port?: number; readOnly?: boolean; tokenAuth?: RegistryTokenAuth; say?: Say }): Promise<ImageRegistry> {
  const out = opts.say ?? defaultSay;
  const address = `127.0.0.1:${opts.port ?? (await freePort())}`;
  await mkdir(opts.dir, { recursive: true });
  const config = path.join(opts.dir, 'registry.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${JSON.stringify(path.join(opts.dir, 'data'))}`,
      '  delete:',
      '    enabled: true',
      ...(opts.readOnly ? ['  maintenance:', '    readonly:', '      enabled: true'] : []),
      ...(opts.tokenAuth
        ? ['auth:', '  token:', ...Object.entries({ realm: opts.tokenAuth.realm, service: opts.tokenAuth.service, issuer: opts.tokenAuth.issuer, rootcertbundle: opts.tokenAuth.rootCertBundle }).map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`)]
        : []),
      'http:',
      `  addr: ${address}`,
      '',
    ].join('\n'),
  );
  const daemon = startDaemon('registry', 'docker-registry', ['serve', config], opts.logDir ?? opts.dir);
  try {
    // With token auth, /v2/ answers 401 and a Bearer challenge once it serves.
    const ready = opts.tokenAuth
      ? async () => {
          const res = await fetch(`http://${address}/v2/`, { signal: AbortSignal.timeout(3000) });
          if (res.status !== 401 || !/^Bearer /.test(res.headers.get('www-authenticate') ?? '')) throw new Error(`http://${address}/v2/: HTTP ${res.status}, not a Bearer challenge`);
        }
      : () => get(`http://${address}/v2/`);
    await waitForDaemon(daemon, `the registry at ${address}`, ready, 30_000, out);
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  return { address, stop: () => daemon.stop() };
}

/** containerd's hosts.toml for a registry it pulls from over plain HTTP. */
export function registryHostsToml(registry: string): string {
  return `server = "http://${registry}"\n\n[host."http://${registry}"]\n  capabilities = ["pull", "resolve"]\n`;
}
