import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import { images } from './system.js';

/**
 * Builds (once per content) an image FROM the busybox base with the given entrypoint script,
 * for tests that need a template behaving in one precise way.
 */
export async function scriptImage(docker: Docker, script: string): Promise<string> {
  const dockerfile = `FROM ${images.busybox}\nCOPY entrypoint.sh /entrypoint.sh\nENTRYPOINT ["/entrypoint.sh"]\n`;
  const tag = createHash('sha256').update(dockerfile).update(script).digest('hex').slice(0, 12);
  const ref = `glider-gun/test-script:${tag}`;
  const exists = await docker.getImage(ref).inspect().then(() => true, () => false);
  if (exists) return ref;
  const pack = tar.pack();
  pack.entry({ name: 'Dockerfile' }, dockerfile);
  pack.entry({ name: 'entrypoint.sh', mode: 0o755 }, script);
  pack.finalize();
  const stream = await docker.buildImage(Readable.from(pack), { t: ref, rm: true, forcerm: true });
  await new Promise<void>((resolve, reject) =>
    docker.modem.followProgress(stream, (err: Error | null, out: { error?: string }[]) => {
      const failed = out?.find((o) => o.error);
      if (err || failed) reject(err ?? new Error(failed?.error));
      else resolve();
    }),
  );
  return ref;
}
