import type Docker from 'dockerode';
import { env } from './system.js';

/**
 * Pushes a local image to the test registry (test/run.ts starts it) and answers its registry reference:
 * the form both adapters run, a Docker node pulling it and a Kubernetes node likewise.
 */
export async function pushToRegistry(docker: Docker, localRef: string): Promise<string> {
  // Without the test cluster (GG_TEST_KUBERNETES=0) there is no registry: a Docker node runs the local image.
  if (!process.env.GG_TEST_REGISTRY) return localRef;
  const registry = env('GG_TEST_REGISTRY');
  const colon = localRef.lastIndexOf(':');
  const [repo, tag] = colon > localRef.lastIndexOf('/') ? [localRef.slice(0, colon), localRef.slice(colon + 1)] : [localRef, 'latest'];
  const target = `${registry}/${repo}`;
  await docker.getImage(localRef).tag({ repo: target, tag });
  // The engine insists on an auth header even for a registry without auth.
  const stream = await docker.getImage(`${target}:${tag}`).push({ authconfig: { serveraddress: registry } });
  await new Promise<void>((resolve, reject) =>
    docker.modem.followProgress(stream, (err: Error | null, out: { error?: string }[]) => {
      const failed = out?.find((o) => o.error);
      if (err || failed) reject(err ?? new Error(failed?.error));
      else resolve();
    }),
  );
  return `${target}:${tag}`;
}
