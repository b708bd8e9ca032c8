/**
 * cgroups (v1 here, cgroup2 only at `unified`): a test cluster's kubelet puts its pods under a cgroup root
 * of the cluster's own, in every hierarchy. What is in that tree is the cluster's pods, so a dead cluster's
 * containers are found there and nowhere else.
 */
import { mkdir, readFile, readdir, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

const CGROUP_ROOT = '/sys/fs/cgroup';

/** The v1 hierarchies; with `unified`, also the cgroup2 one runc uses beside them (hybrid mode). */
async function cgroupHierarchies(withUnified = false): Promise<string[]> {
  const entries = await readdir(CGROUP_ROOT, { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory() && (withUnified || e.name !== 'unified')).map((e) => e.name);
}

export async function createCgroupRoot(name: string): Promise<void> {
  for (const controller of await cgroupHierarchies()) {
    const dir = path.join(CGROUP_ROOT, controller, name);
    await mkdir(dir, { recursive: true });
    if (controller === 'cpuset') {
      // A new cpuset starts empty; a child can only take what its parent has.
      for (const file of ['cpuset.cpus', 'cpuset.mems']) {
        await writeFile(path.join(dir, file), await readFile(path.join(CGROUP_ROOT, controller, file), 'utf8'));
      }
    }
  }
}

async function removeTree(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) if (e.isDirectory()) await removeTree(path.join(dir, e.name));
  await rmdir(dir).catch(() => undefined);
}

/** Removes the cgroup root `name` in every hierarchy (only empty cgroups can go: kill what is inside first). */
export async function removeCgroupRoot(name: string): Promise<void> {
  for (const hierarchy of await cgroupHierarchies(true)) await removeTree(path.join(CGROUP_ROOT, hierarchy, name));
}

async function pidsUnder(dir: string): Promise<number[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const own = (await readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number);
  const nested = await Promise.all(entries.filter((e) => e.isDirectory()).map((e) => pidsUnder(path.join(dir, e.name))));
  return [...own, ...nested.flat()];
}

/** Every process in the cgroup root `name`, in any hierarchy: a cluster's pods' processes. */
export async function processesInCgroupRoot(name: string): Promise<number[]> {
  const all = await Promise.all((await cgroupHierarchies(true)).map((h) => pidsUnder(path.join(CGROUP_ROOT, h, name))));
  return [...new Set(all.flat())];
}

/**
 * SIGKILLs everything in the cgroup root `name` until nothing is left (a dying process may have forked
 * meanwhile, so it looks again). Answers how many it killed.
 */
export async function killCgroupRoot(name: string, timeoutMs = 10_000): Promise<number> {
  const killed = new Set<number>();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = await processesInCgroupRoot(name);
    if (pids.length === 0 || Date.now() > deadline) return killed.size;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killed.add(pid);
      } catch {
        // gone already
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
