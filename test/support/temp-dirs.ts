import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';

/** Fresh empty folders for one suite, under one root removed after it. Call inside describe(). */
export function tempDirs(prefix: string): { fresh(): Promise<string>; readonly root: string } {
  let root = '';
  let n = 0;
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), prefix));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });
  return {
    async fresh() {
      const dir = path.join(root, `d${n++}`);
      await mkdir(dir);
      return dir;
    },
    get root() {
      return root;
    },
  };
}
