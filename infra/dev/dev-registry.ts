/**
 * The dev stack's image registry: template builds push there and the dev cluster pulls from there. Built
 * template versions name it (`127.0.0.1:<port>/glider-gun/templates/…`), so its port and its images outlive
 * restarts: the images under `<data dir>/registry/data`, the port chosen once (5050 unless taken, or
 * GLIDERGUN_DEV_REGISTRY_PORT) and kept in `<data dir>/registry/port`.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isPortInUse, keepablePort } from './ports.js';
import type { Say } from './progress.js';
import { startImageRegistry, type ImageRegistry } from './registry.js';

export const DEFAULT_DEV_REGISTRY_PORT = 5050;

export async function devRegistryPort(dataDir: string, requested = process.env.GLIDERGUN_DEV_REGISTRY_PORT): Promise<number> {
  const kept = Number(await readFile(path.join(dataDir, 'registry', 'port'), 'utf8').catch(() => '')) || undefined;
  const port = requested ? Number(requested) : kept;
  if (port !== undefined) {
    if (await isPortInUse(port)) {
      throw new Error(
        `port ${port} of the dev registry is in use by another program: template versions built here name 127.0.0.1:${port}. ` +
          'Stop that program, or set GLIDERGUN_DEV_REGISTRY_PORT to another port (versions built before then no longer run)',
      );
    }
    return port;
  }
  return (await isPortInUse(DEFAULT_DEV_REGISTRY_PORT)) ? keepablePort() : DEFAULT_DEV_REGISTRY_PORT;
}

export async function startDevRegistry(dataDir: string, out: Say): Promise<ImageRegistry> {
  const dir = path.join(dataDir, 'registry');
  const port = await devRegistryPort(dataDir);
  await mkdir(dir, { recursive: true });
  const registry = await startImageRegistry({ dir, port, say: out });
  await writeFile(path.join(dir, 'port'), `${port}\n`);
  return registry;
}
