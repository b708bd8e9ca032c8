import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** Heavy builds are cached per tool and version outside the work tree, so a fresh clone (CI) reuses them. */
export function cacheDir(tool: string, version: string): string {
  const base = process.env.GLIDERGUN_CACHE_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'glider-gun');
  return path.join(base, `${tool}-${version}`);
}

/**
 * Runs `build` unless another process is already building the same thing: then waits for it and returns
 * undefined (the caller looks for its result again). Two `npm test`s on a new machine would otherwise each
 * spend minutes of both cores on the same build. A lock whose owner died is taken over.
 */
export async function buildOnce<T>(lock: string, build: () => Promise<T>, waiting: (ownerPid: number) => void): Promise<T | undefined> {
  await mkdir(path.dirname(lock), { recursive: true });
  for (;;) {
    try {
      await writeFile(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number(await readFile(lock, 'utf8').catch(() => '0'));
    if (!owner || !isAlive(owner)) {
      await rm(lock, { force: true });
      continue;
    }
    waiting(owner);
    while (isAlive(owner) && (await readFile(lock, 'utf8').catch(() => '')) === String(owner)) await new Promise((r) => setTimeout(r, 2_000));
    return undefined;
  }
  try {
    return await build();
  } finally {
    await rm(lock, { force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
