/**
 * testdata/state-from-ts.tar.gz: a /state packed by packState of activities/execution/state-archive.ts,
 * for archive_test.go (TestUnpackWhatTypeScriptPacks) to restore: the runner must read what the Docker
 * adapter writes. Deterministic (fixed modes and times; Node's gzip header carries no time), so
 * test/unit/parity-vectors.test.ts can make it again and compare: `npm run parity-vectors` rewrites it.
 */
import { chmod, lutimes, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { packState } from '../../../../activities/execution/state-archive.js';

export const STATE_FROM_TS_FILE = new URL('state-from-ts.tar.gz', import.meta.url);

/** Every entry's time in the archive: 2020-01-01T00:00:00Z. */
const MTIME = new Date('2020-01-01T00:00:00Z');

/** The file's bytes. */
export async function stateFromTs(): Promise<Buffer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gg-state-'));
  try {
    const long = `${'long-folder-name/'.repeat(8)}${'n'.repeat(90)}`;
    await mkdir(path.join(dir, path.dirname(long)), { recursive: true });
    await writeFile(path.join(dir, long), 'deep');
    await mkdir(path.join(dir, 'a/b'), { recursive: true });
    await writeFile(path.join(dir, 'a/b/file'), 'content');
    await writeFile(path.join(dir, 'exec'), '#!/bin/sh\n');
    await writeFile(path.join(dir, 'empty'), '');
    await writeFile(path.join(dir, 'zeros'), Buffer.alloc(200 * 1024));
    await writeFile(path.join(dir, 'é-😀.txt'), 'unicode');
    await symlink('/etc/passwd', path.join(dir, 'host-link'));
    await symlink(`${'../'.repeat(60)}target`, path.join(dir, 'long-link'));
    // Modes without the umask, times without the clock: only what is written above decides the archive.
    const entries = await readdir(dir, { withFileTypes: true, recursive: true });
    for (const e of entries) {
      const full = path.join(e.parentPath, e.name);
      if (!e.isSymbolicLink()) await chmod(full, e.isDirectory() ? 0o755 : 0o644);
    }
    await chmod(path.join(dir, 'exec'), 0o750);
    for (const e of entries) await lutimes(path.join(e.parentPath, e.name), MTIME, MTIME);
    return await buffer(packState(dir, () => undefined));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
