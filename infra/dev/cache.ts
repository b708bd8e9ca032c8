import os from 'node:os';
import path from 'node:path';

/** Heavy builds are cached per tool and version outside the work tree, so a fresh clone (CI) reuses them. */
export function cacheDir(tool: string, version: string): string {
  const base = process.env.GLIDERGUN_CACHE_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'glider-gun');
  return path.join(base, `${tool}-${version}`);
}
