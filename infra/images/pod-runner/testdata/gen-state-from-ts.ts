/**
 * Writes testdata/state-from-ts.tar.gz with packState of activities/execution/state-archive.ts, for
 * archive_test.go to restore: the runner must read what the Docker adapter writes.
 * Run from infra/images/pod-runner: npx tsx testdata/gen-state-from-ts.ts
 */
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { packState } from '../../../../activities/execution/state-archive.js';

const dir = await mkdtemp(path.join(os.tmpdir(), 'gg-state-'));
try {
  const long = `${'long-folder-name/'.repeat(8)}${'n'.repeat(90)}`;
  await mkdir(path.join(dir, path.dirname(long)), { recursive: true });
  await writeFile(path.join(dir, long), 'deep');
  await mkdir(path.join(dir, 'a/b'), { recursive: true });
  await writeFile(path.join(dir, 'a/b/file'), 'content');
  await writeFile(path.join(dir, 'exec'), '#!/bin/sh\n');
  await chmod(path.join(dir, 'exec'), 0o750);
  await writeFile(path.join(dir, 'empty'), '');
  await writeFile(path.join(dir, 'zeros'), Buffer.alloc(200 * 1024));
  await writeFile(path.join(dir, 'é-😀.txt'), 'unicode');
  await symlink('/etc/passwd', path.join(dir, 'host-link'));
  await symlink(`${'../'.repeat(60)}target`, path.join(dir, 'long-link'));
  await pipeline(packState(dir, () => undefined), createWriteStream(new URL('state-from-ts.tar.gz', import.meta.url)));
} finally {
  await rm(dir, { recursive: true, force: true });
}
