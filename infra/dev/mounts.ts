/** Mounts a cluster's node leaves under its folder (the kubelet's bind of its root, pod volumes, overlay rootfs, netns). */
import { readFile, readdir, readlink, rm } from 'node:fs/promises';
import path from 'node:path';
import { run } from './commands.js';

const unescape = (p: string) => p.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** Mount points below any of `dirs` (not the folders themselves), deepest first; stacked mounts appear once per layer. */
export async function mountsUnder(dirs: string[]): Promise<string[]> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  return mountinfo
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    .map(unescape)
    .filter((p) => dirs.some((d) => p.startsWith(`${d}/`)))
    .sort((a, b) => b.length - a.length);
}

/**
 * Unmounts every mount below the given folders, deepest first (lazily when busy), until none is left, and
 * removes the pods' log links in /var/log/containers that point there. Answers how many mounts it removed.
 */
export async function unmountUnder(dirs: string[]): Promise<number> {
  let removed = 0;
  for (let round = 0; round < 5; round++) {
    const points = await mountsUnder(dirs);
    if (points.length === 0) break;
    for (const p of points) {
      await run('umount', [p]).catch(() => run('umount', ['-l', p])).catch(() => undefined);
      removed++;
    }
  }
  // The kubelet links each container's log from /var/log/containers into its pod logs folder.
  const links = await readdir('/var/log/containers').catch(() => []);
  for (const link of links) {
    const file = path.join('/var/log/containers', link);
    const target = await readlink(file).catch(() => '');
    if (dirs.some((d) => target.startsWith(`${d}/`))) await rm(file, { force: true });
  }
  return removed;
}
