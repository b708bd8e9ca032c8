import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { UnsafeArchiveEntryError, isDamagedArchive, packState, unpackState } from '../../activities/execution/state-archive.js';
import { tempDirs } from '../support/temp-dirs.js';

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p);
  return Buffer.concat(parts);
}

async function hostileArchive(entries: { name: string; type?: 'file' | 'symlink' | 'directory'; linkname?: string; body?: string }[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: e.linkname! });
    else if (e.type === 'directory') pack.entry({ name: e.name, type: 'directory' });
    else pack.entry({ name: e.name }, e.body ?? 'x');
  }
  pack.finalize();
  return gzipSync(await collect(pack as unknown as AsyncIterable<Buffer>));
}

async function* once(buf: Buffer): AsyncGenerator<Buffer> {
  yield await Promise.resolve(buf);
}

describe('state archives', () => {
  const dirs = tempDirs('gg-archive-');
  const fresh = () => dirs.fresh();

  it('round-trips files, folders, modes and links without following them', async () => {
    const src = await fresh();
    await mkdir(path.join(src, 'a/b'), { recursive: true });
    await writeFile(path.join(src, 'a/b/file'), 'content');
    await writeFile(path.join(src, 'exec'), '#!/bin/sh', { mode: 0o755 });
    await writeFile(path.join(src, 'empty'), '');
    await symlink('/etc/passwd', path.join(src, 'host-link'));
    const warnings: string[] = [];
    const archive = await collect(packState(src, (w) => warnings.push(w)));
    const dst = await fresh();
    await unpackState(dst, once(archive));
    assert.equal(await readFile(path.join(dst, 'a/b/file'), 'utf8'), 'content');
    assert.equal((await lstat(path.join(dst, 'exec'))).mode & 0o777, 0o755);
    assert.equal(await readFile(path.join(dst, 'empty'), 'utf8'), '');
    assert.equal(await readlink(path.join(dst, 'host-link')), '/etc/passwd');
    assert.deepEqual(warnings, []);
  });

  for (const [what, entries, code] of [
    ['a ../ path', [{ name: '../evil' }], 'ENTRY_OUTSIDE'],
    ['an absolute path', [{ name: '/tmp/gg-evil-absolute' }], 'ENTRY_OUTSIDE'],
    ['a file through a link', [{ name: 'out', type: 'symlink' as const, linkname: '' }, { name: 'out/evil' }], 'ENTRY_THROUGH_LINK'],
    ['a file before its folder', [{ name: 'missing/evil' }], 'ENTRY_BEFORE_FOLDER'],
  ] as const) {
    it(`refuses ${what}, writing nothing outside the folder`, async () => {
      const dst = await fresh();
      const outside = await fresh();
      const list = entries.map((e) => ('linkname' in e ? { ...e, linkname: outside } : e));
      const refusal = await unpackState(dst, once(await hostileArchive(list))).then(
        () => assert.fail('the archive was restored'),
        (err: unknown) => err,
      );
      // Refused as such, not failing on something else by chance (a missing folder, say).
      assert.ok(refusal instanceof UnsafeArchiveEntryError, `refused with ${String(refusal)}`);
      assert.equal(refusal.code, code);
      assert.equal(refusal.entry, list.at(-1)!.name);
      assert.ok(isDamagedArchive(refusal), 'a run restoring it fails as state-corrupt, not retried');
      assert.equal(existsSync(path.join(dirs.root, 'evil')), false);
      assert.equal(existsSync('/tmp/gg-evil-absolute'), false);
      assert.equal(existsSync(path.join(outside, 'evil')), false);
    });
  }

  it('refuses a truncated archive', async () => {
    const src = await fresh();
    await writeFile(path.join(src, 'f'), 'x'.repeat(100_000));
    const archive = await collect(packState(src, () => undefined));
    await assert.rejects(unpackState(await fresh(), once(archive.subarray(0, archive.length / 2))), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.equal((err as NodeJS.ErrnoException).code, 'Z_BUF_ERROR', `${err.message}`);
      assert.ok(isDamagedArchive(err), 'a run restoring it fails as state-corrupt, not retried');
      return true;
    });
  });
});
