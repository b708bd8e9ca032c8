import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import {
  DEFAULT_SOURCE_LIMITS,
  SourceRejectedError,
  checkGitSource,
  checkGitUrl,
  normalizeDirectory,
  normalizeUpload,
  parseGitSource,
  type NormalizedSource,
  type SourceErrorCode,
  type UploadFormat,
} from '../../core/template-sources/index.js';
import { deflatedZeros, writeZip, type ZipEntrySpec } from '../support/zip.js';
import { tempDirs } from '../support/temp-dirs.js';

// One description of an entry, written as a tar entry or as a zip entry, so each hostile case runs on both.
interface Spec {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  data?: string | Buffer;
  mode?: number; // permission bits
  linkname?: string;
}

const S_IF: Record<NonNullable<Spec['type']>, number> = {
  file: 0o100000,
  directory: 0o040000,
  symlink: 0o120000,
  link: 0o100000,
  'character-device': 0o020000,
  'block-device': 0o060000,
  fifo: 0o010000,
};

async function tarOf(specs: (Spec & { pax?: Record<string, string> })[], extra?: Buffer): Promise<Buffer> {
  const pack = tar.pack();
  for (const s of specs) {
    const header = { name: s.name, type: s.type ?? 'file', mode: s.mode ?? (s.type === 'directory' ? 0o755 : 0o644), ...(s.linkname !== undefined ? { linkname: s.linkname } : {}), ...(s.pax ? { pax: s.pax } : {}) };
    pack.entry(header, typeof s.data === 'string' ? Buffer.from(s.data) : (s.data ?? Buffer.alloc(0)));
  }
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const p of pack as unknown as AsyncIterable<Buffer>) parts.push(p);
  return Buffer.concat([...parts, ...(extra ? [extra] : [])]);
}

async function archiveOf(format: UploadFormat, specs: Spec[]): Promise<Buffer> {
  if (format === 'tgz') return zlib.gzipSync(await tarOf(specs));
  return writeZip(
    specs.map((s): ZipEntrySpec => {
      const type = s.type ?? 'file';
      const name = type === 'directory' && !s.name.endsWith('/') ? `${s.name}/` : s.name;
      return { name, data: type === 'symlink' ? s.linkname : s.data, mode: S_IF[type] | (s.mode ?? (type === 'directory' ? 0o755 : 0o644)), method: 'deflate' };
    }),
  );
}

/** Asserts the promise is refused with `code`, nothing returned. */
async function refused(promise: Promise<NormalizedSource>, code: SourceErrorCode, entry?: string): Promise<SourceRejectedError> {
  let result: NormalizedSource | undefined;
  try {
    result = await promise;
  } catch (err) {
    assert.ok(err instanceof SourceRejectedError, `expected a SourceRejectedError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (entry !== undefined) assert.equal(err.entry, entry);
    return err;
  }
  assert.fail(`expected ${code}, got a source of ${result.files} files`);
}

interface Listed {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname: string | null;
  content: string;
}

async function list(archive: Buffer): Promise<Listed[]> {
  const extract = tar.extract();
  const out: Listed[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const parts: Buffer[] = [];
      for await (const p of entry as unknown as AsyncIterable<Buffer>) parts.push(p);
      const h = entry.header;
      out.push({ name: h.name, type: h.type, mode: h.mode, uid: h.uid, gid: h.gid, mtime: h.mtime.getTime(), linkname: h.linkname ?? null, content: Buffer.concat(parts).toString() });
    }
  })();
  extract.end(zlib.gunzipSync(archive));
  await done;
  return out;
}

const FORMATS: UploadFormat[] = ['zip', 'tgz'];

describe('template sources: hostile uploads are refused', () => {
  for (const format of FORMATS) {
    describe(format, () => {
      const cases: [string, Spec[], SourceErrorCode, string?][] = [
        ['a ../ path', [{ name: 'ok', data: 'x' }, { name: '../evil', data: 'x' }], 'SOURCE_PATH_ESCAPES', '../evil'],
        ['a ../ in the middle of a path', [{ name: 'a/../../evil', data: 'x' }], 'SOURCE_PATH_ESCAPES'],
        ['an absolute path', [{ name: '/etc/evil', data: 'x' }], 'SOURCE_ABSOLUTE_PATH', '/etc/evil'],
        ['a link out through ..', [{ name: 'dir/passwd', type: 'symlink', linkname: '../../etc/passwd' }], 'SOURCE_LINK_ESCAPES', 'dir/passwd'],
        ['a link to an absolute path', [{ name: 'passwd', type: 'symlink', linkname: '/etc/passwd' }], 'SOURCE_LINK_ESCAPES', 'passwd'],
        // Neither link leaves the tree when read alone ('b/..' and '.'), but a/.. through b does.
        ['a chain of links out', [{ name: 'b', type: 'symlink', linkname: '.' }, { name: 'a', type: 'symlink', linkname: 'b/..' }], 'SOURCE_LINK_ESCAPES', 'a'],
        [
          'a link out through a link to the root',
          [
            { name: 'x/y/up', type: 'symlink', linkname: '../..' },
            { name: 'l', type: 'symlink', linkname: 'x/y/up/../etc' },
          ],
          'SOURCE_LINK_ESCAPES',
          'l',
        ],
        ['a link loop', [{ name: 'a', type: 'symlink', linkname: 'b' }, { name: 'b', type: 'symlink', linkname: 'a/x' }], 'SOURCE_LINK_LOOP'],
        ['an empty link target', [{ name: 'a', type: 'symlink', linkname: '' }], 'SOURCE_BAD_PATH'],
        ['a character device', [{ name: 'null', type: 'character-device' }], 'SOURCE_SPECIAL_FILE', 'null'],
        ['a block device', [{ name: 'sda', type: 'block-device' }], 'SOURCE_SPECIAL_FILE', 'sda'],
        ['a FIFO', [{ name: 'pipe', type: 'fifo' }], 'SOURCE_SPECIAL_FILE', 'pipe'],
        ['the same path twice', [{ name: 'a/f', data: '1' }, { name: 'a/f', data: '2' }], 'SOURCE_DUPLICATE_PATH', 'a/f'],
        ['the same path spelled twice', [{ name: 'f', data: '1' }, { name: './f', data: '2' }], 'SOURCE_DUPLICATE_PATH', './f'],
        ['a file that is also a folder', [{ name: 'a/b', data: '1' }, { name: 'a', data: '2' }], 'SOURCE_DUPLICATE_PATH', 'a'],
        ['a file under a link', [{ name: 'l', type: 'symlink', linkname: 'sub' }, { name: 'l/f', data: '2' }], 'SOURCE_DUPLICATE_PATH', 'l/f'],
        ['a path over 1024 bytes', [{ name: `${'d/'.repeat(600)}f`, data: 'x' }], 'SOURCE_BAD_PATH'],
        ['only folders', [{ name: 'a', type: 'directory' }, { name: 'a/b', type: 'directory' }], 'SOURCE_EMPTY'],
        ['nothing at all', [], 'SOURCE_EMPTY'],
      ];
      for (const [what, specs, code, entry] of cases) {
        it(`refuses ${what} (${code})`, async () => {
          await refused(normalizeUpload(format, await archiveOf(format, specs)), code, entry);
        });
      }

      it('refuses more files than maxFiles, folders implied by paths included', async () => {
        const six = Array.from({ length: 6 }, (_, i) => ({ name: `f${i}`, data: 'x' }));
        await refused(normalizeUpload(format, await archiveOf(format, six), { maxFiles: 5 }), 'SOURCE_TOO_MANY_FILES');
        await refused(normalizeUpload(format, await archiveOf(format, [{ name: 'a/b/c/f', data: 'x' }]), { maxFiles: 3 }), 'SOURCE_TOO_MANY_FILES');
        assert.equal((await normalizeUpload(format, await archiveOf(format, [{ name: 'a/b/c/f', data: 'x' }]), { maxFiles: 4 })).files, 1);
      });

      it('refuses more content than maxBytes', async () => {
        const specs = [{ name: 'a', data: 'x'.repeat(600) }, { name: 'b', data: 'x'.repeat(600) }];
        await refused(normalizeUpload(format, await archiveOf(format, specs), { maxBytes: 1000 }), 'SOURCE_TOO_LARGE', 'b');
        assert.equal((await normalizeUpload(format, await archiveOf(format, specs), { maxBytes: 1200 })).bytes, 1200);
      });

      it('refuses an upload over maxUploadBytes before reading it', async () => {
        const archive = await archiveOf(format, [{ name: 'a', data: 'x' }]);
        await refused(normalizeUpload(format, archive, { maxUploadBytes: archive.length - 1 }), 'SOURCE_UPLOAD_TOO_LARGE');
      });

      it('refuses truncated archives', async () => {
        const archive = await archiveOf(format, [{ name: 'a', data: Buffer.from(Array.from({ length: 50_000 }, (_, i) => (i * 7919) % 251)) }, { name: 'b', data: 'x' }]);
        for (const cut of [0.3, 0.6, 0.95]) {
          await refused(normalizeUpload(format, archive.subarray(0, Math.floor(archive.length * cut))), 'SOURCE_BAD_ARCHIVE');
        }
      });

      it('refuses garbage, an empty upload and the other format', async () => {
        const garbage = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 31 + 7) % 256));
        await refused(normalizeUpload(format, garbage), 'SOURCE_BAD_ARCHIVE');
        await refused(normalizeUpload(format, Buffer.alloc(0)), 'SOURCE_BAD_ARCHIVE');
        const other = await archiveOf(format === 'zip' ? 'tgz' : 'zip', [{ name: 'a', data: 'x' }]);
        await refused(normalizeUpload(format, other), 'SOURCE_BAD_ARCHIVE');
      });

      it('refuses a path with a NUL byte', async () => {
        const archive =
          format === 'zip'
            ? writeZip([{ name: 'a\0b', data: 'x' }])
            : zlib.gzipSync(await tarOf([{ name: 'placeholder', data: 'x', pax: { path: 'a\0b' } }]));
        await refused(normalizeUpload(format, archive), 'SOURCE_BAD_PATH');
      });
    });
  }

  describe('zip only', () => {
    it('refuses a Windows drive path and ..\\ paths', async () => {
      await refused(normalizeUpload('zip', writeZip([{ name: 'C:/evil', data: 'x' }])), 'SOURCE_ABSOLUTE_PATH');
      await refused(normalizeUpload('zip', writeZip([{ name: '..\\evil', data: 'x' }])), 'SOURCE_PATH_ESCAPES');
    });

    it('refuses a socket and an unknown file type', async () => {
      await refused(normalizeUpload('zip', writeZip([{ name: 's', mode: 0o140755 }])), 'SOURCE_SPECIAL_FILE');
      await refused(normalizeUpload('zip', writeZip([{ name: 'w', mode: 0o160644 }])), 'SOURCE_UNSUPPORTED_ENTRY');
    });

    it('refuses an entry whose content does not match its CRC', async () => {
      await refused(normalizeUpload('zip', writeZip([{ name: 'a', data: 'hello', crc: 1234 }])), 'SOURCE_BAD_ARCHIVE', 'a');
    });

    it('refuses a link whose target is over 1024 bytes without reading it', async () => {
      await refused(normalizeUpload('zip', writeZip([{ name: 'l', data: 'a/'.repeat(600), mode: 0o120777 }])), 'SOURCE_BAD_PATH', 'l');
    });

    it('refuses an archive whose central directory announces more than maxFiles entries', async () => {
      const zip = writeZip(Array.from({ length: 20 }, (_, i) => ({ name: `d${i}/` })));
      await refused(normalizeUpload('zip', zip, { maxFiles: 10 }), 'SOURCE_TOO_MANY_FILES');
    });
  });

  describe('tgz only', () => {
    it('refuses a hard link', async () => {
      const archive = zlib.gzipSync(await tarOf([{ name: 'a', data: 'x' }, { name: 'b', type: 'link', linkname: 'a' }]));
      await refused(normalizeUpload('tgz', archive), 'SOURCE_HARDLINK', 'b');
    });

    it('refuses a hard link to a host file', async () => {
      const archive = zlib.gzipSync(await tarOf([{ name: 'shadow', type: 'link', linkname: '/etc/shadow' }]));
      await refused(normalizeUpload('tgz', archive), 'SOURCE_HARDLINK', 'shadow');
    });

    it('refuses GNU sparse files (old style, and pax)', async () => {
      await refused(normalizeUpload('tgz', zlib.gzipSync(Buffer.concat([rawTarHeader('sparse', 'S', 0), Buffer.alloc(1024)]))), 'SOURCE_UNSUPPORTED_ENTRY', 'sparse');
      const pax = zlib.gzipSync(await tarOf([{ name: 'f', data: 'x', pax: { 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0' } }]));
      await refused(normalizeUpload('tgz', pax), 'SOURCE_UNSUPPORTED_ENTRY', 'f');
    });

    it('refuses an unknown entry type', async () => {
      await refused(normalizeUpload('tgz', zlib.gzipSync(Buffer.concat([rawTarHeader('label', 'V', 0), Buffer.alloc(1024)]))), 'SOURCE_UNSUPPORTED_ENTRY');
    });

    it('refuses a gzip of a truncated tar', async () => {
      const whole = await tarOf([{ name: 'a', data: 'x'.repeat(5000) }]);
      await refused(normalizeUpload('tgz', zlib.gzipSync(whole.subarray(0, 2048))), 'SOURCE_BAD_ARCHIVE');
    });
  });
});

describe('template sources: decompression bombs', () => {
  const GiB = 1024 ** 3;
  let zeros: { deflated: Buffer; crc: number };
  before(async () => {
    zeros = await deflatedZeros(GiB);
    assert.ok(zeros.deflated.length < 2 * 1024 * 1024, `1 GiB of zeros deflates to ${zeros.deflated.length} bytes`);
  });

  it('refuses a zip entry inflating past maxBytes (declared honestly)', async () => {
    const zip = writeZip([{ name: 'bomb', data: Buffer.alloc(100_000), method: 'deflate' }]);
    await refused(normalizeUpload('zip', zip, { maxBytes: 1000 }), 'SOURCE_TOO_LARGE', 'bomb');
  });

  it('refuses a zip entry inflating past maxBytes while its header claims 10 bytes', async () => {
    const data = Buffer.alloc(100_000);
    const zip = writeZip([{ name: 'bomb', deflated: zlib.deflateRawSync(data), uncompressedSize: 10, crc: zlib.crc32(data) }]);
    await refused(normalizeUpload('zip', zip, { maxBytes: 1000 }), 'SOURCE_TOO_LARGE', 'bomb');
    // Under maxBytes the lie is still found: more bytes than the header says.
    await refused(normalizeUpload('zip', zip), 'SOURCE_BAD_ARCHIVE', 'bomb');
  });

  it('refuses 1 GiB of zeros in a ~1 MB zip at once, from its declared size', async () => {
    const zip = writeZip([{ name: 'zeros', deflated: zeros.deflated, uncompressedSize: GiB, crc: zeros.crc }]);
    const err = await refused(normalizeUpload('zip', zip), 'SOURCE_TOO_LARGE', 'zeros');
    // Refused on the size its header declares, before any of it is inflated: not by counting what inflates
    // (which says "holds more than"), and so whatever the machine's speed.
    assert.match(err.message, new RegExp(`^"zeros" is ${GiB} bytes: the source would hold more than`), err.message);
  });

  it('stops inflating 1 GiB of zeros at maxBytes when the header understates it', async () => {
    // The header claims exactly maxBytes, so only counting while inflating can stop it.
    const refusedAt = async (maxBytes: number) => {
      const zip = writeZip([{ name: 'zeros', deflated: zeros.deflated, uncompressedSize: maxBytes, crc: zeros.crc }]);
      const started = performance.now();
      const err = await refused(normalizeUpload('zip', zip, { maxBytes }), 'SOURCE_TOO_LARGE', 'zeros');
      assert.match(err.message, /holds more than/, err.message);
      return performance.now() - started;
    };
    // A ratio, not a bound: stopping at maxBytes makes the work grow with maxBytes (32 times the bytes at
    // 256 MiB as at 8 MiB; about 10 times the time, with the fixed costs), while inflating the whole GiB
    // first costs the same for both. The fastest of three runs each, since a busy machine only adds time.
    const fastest = async (maxBytes: number) => Math.min(...[await refusedAt(maxBytes), await refusedAt(maxBytes), await refusedAt(maxBytes)]);
    const small = await fastest(8 * 1024 * 1024);
    const large = await fastest(256 * 1024 * 1024);
    console.log(`refused after ${small.toFixed(0)} ms at 8 MiB, ${large.toFixed(0)} ms at 256 MiB`);
    assert.ok(large > 3 * small, `refused after ${small.toFixed(0)} ms at 8 MiB and ${large.toFixed(0)} ms at 256 MiB: the work should grow with maxBytes`);
  });

  it('refuses a zip of many entries each under maxBytes, counting their total', async () => {
    const data = Buffer.alloc(300_000);
    const zip = writeZip(Array.from({ length: 10 }, (_, i) => ({ name: `f${i}`, data, method: 'deflate' as const })));
    await refused(normalizeUpload('zip', zip, { maxBytes: 2_000_000 }), 'SOURCE_TOO_LARGE', 'f6');
  });

  it('refuses a tgz whose file inflates past maxBytes', async () => {
    const tgz = zlib.gzipSync(await tarOf([{ name: 'bomb', data: Buffer.alloc(100_000) }]));
    await refused(normalizeUpload('tgz', tgz, { maxBytes: 1000 }), 'SOURCE_TOO_LARGE', 'bomb');
  });

  it('refuses a tgz holding 1 GiB of zeros from its declared size, before inflating it', async () => {
    const header = rawTarHeader('zeros', '0', GiB);
    const tgz = (await deflatedZeros(GiB + 1024, 'gzip', header)).deflated;
    assert.ok(tgz.length < 2 * 1024 * 1024);
    const err = await refused(normalizeUpload('tgz', tgz), 'SOURCE_TOO_LARGE', 'zeros');
    // On the size the tar header declares (it frames the entry, so it cannot lie), before inflating it.
    assert.match(err.message, new RegExp(`^"zeros" is ${GiB} bytes: the source would hold more than`), err.message);
  });

  it('refuses a tgz whose tar stream goes on with endless zero blocks, bounded too', async () => {
    const tar = await tarOf([{ name: 'a', data: 'x' }]);
    const tgz = (await deflatedZeros(256 * 1024 * 1024, 'gzip', tar)).deflated;
    // Zero blocks hold no entry, so only the bound on the tar stream itself (about 2 MiB here) refuses it.
    const err = await refused(normalizeUpload('tgz', tgz, { maxBytes: 1024 * 1024, maxFiles: 10 }), 'SOURCE_TOO_LARGE');
    assert.match(err.message, /tar stream is larger than \d+ bytes/, err.message);
  });
});

describe('template sources: good sources', () => {
  const tree: Spec[] = [
    { name: 'project', type: 'directory' },
    { name: 'project/Dockerfile', data: 'FROM scratch\n' },
    { name: 'project/bin', type: 'directory', mode: 0o700 },
    { name: 'project/bin/run.sh', data: '#!/bin/sh\necho hi\n', mode: 0o750 },
    { name: 'project/bin/private', data: 'secret', mode: 0o600 },
    { name: 'project/deep/er/still/file.txt', data: 'deep' },
    { name: 'project/empty', data: '' },
    { name: 'project/run', type: 'symlink', linkname: 'bin/run.sh' },
    { name: 'project/deep/er/top', type: 'symlink', linkname: '../../..' },
    { name: 'project/dangling', type: 'symlink', linkname: 'not/there' },
  ];

  for (const format of FORMATS) {
    it(`${format}: keeps nested folders, execute bits and inside links, with normalized metadata`, async () => {
      const source = await normalizeUpload(format, await archiveOf(format, tree));
      assert.equal(source.sha256, createHash('sha256').update(source.archive).digest('hex'));
      assert.equal(source.files, 8); // 5 regular files and 3 links
      assert.equal(source.bytes, 'FROM scratch\n'.length + '#!/bin/sh\necho hi\n'.length + 'secret'.length + 'deep'.length);
      const entries = await list(source.archive);
      assert.deepEqual(
        entries.map((e) => [e.name, e.type, e.mode.toString(8), e.linkname ?? '']),
        [
          ['project/', 'directory', '755', ''],
          ['project/Dockerfile', 'file', '644', ''],
          ['project/bin/', 'directory', '755', ''],
          ['project/bin/private', 'file', '644', ''],
          ['project/bin/run.sh', 'file', '755', ''],
          ['project/dangling', 'symlink', '777', 'not/there'],
          ['project/deep/', 'directory', '755', ''],
          ['project/deep/er/', 'directory', '755', ''],
          ['project/deep/er/still/', 'directory', '755', ''],
          ['project/deep/er/still/file.txt', 'file', '644', ''],
          ['project/deep/er/top', 'symlink', '777', '../../..'],
          ['project/empty', 'file', '644', ''],
          ['project/run', 'symlink', '777', 'bin/run.sh'],
        ],
      );
      for (const e of entries) {
        assert.equal(e.uid, 0);
        assert.equal(e.gid, 0);
        assert.equal(e.mtime, 0);
      }
      assert.equal(entries.find((e) => e.name === 'project/deep/er/still/file.txt')?.content, 'deep');
    });
  }

  it('gives the same digest for a zip and a tgz of the same files, whatever their order, owners, times and folder entries', async () => {
    const zip = await normalizeUpload('zip', await archiveOf('zip', tree.filter((s) => s.type !== 'directory')));
    // The tgz in reverse order, with owners, times and stray permission bits.
    const pack = tar.pack();
    for (const s of [...tree].reverse()) {
      pack.entry(
        { name: s.name, type: s.type ?? 'file', mode: (s.mode ?? 0o664) | 0o020, uid: 1000, gid: 1000, uname: 'alice', gname: 'staff', mtime: new Date(1_700_000_000_000), ...(s.linkname ? { linkname: s.linkname } : {}) },
        Buffer.from(s.data ?? ''),
      );
    }
    pack.finalize();
    const parts: Buffer[] = [];
    for await (const p of pack as unknown as AsyncIterable<Buffer>) parts.push(p);
    const tgz = await normalizeUpload('tgz', zlib.gzipSync(Buffer.concat(parts), { level: 1 }));
    assert.equal(tgz.sha256, zip.sha256);
    assert.ok(tgz.archive.equals(zip.archive));
    // And again: the same input always gives the same bytes.
    assert.equal((await normalizeUpload('zip', await archiveOf('zip', tree))).sha256, zip.sha256);
  });

  it('keeps a single top-level folder as it is (not stripped)', async () => {
    const source = await normalizeUpload('tgz', await archiveOf('tgz', [{ name: 'repo-main/Dockerfile', data: 'x' }]));
    assert.deepEqual((await list(source.archive)).map((e) => e.name), ['repo-main/', 'repo-main/Dockerfile']);
  });

  it('reads zips from tools without Unix modes (MS-DOS host) as files and folders', async () => {
    const zip = writeZip([
      { name: 'dir/', host: 0 },
      { name: 'dir/a.txt', data: 'a', host: 0, mode: 0o120777 /* ignored: not a Unix host */ },
    ]);
    const entries = await list((await normalizeUpload('zip', zip)).archive);
    assert.deepEqual(entries.map((e) => [e.name, e.type, e.mode.toString(8)]), [['dir/', 'directory', '755'], ['dir/a.txt', 'file', '644']]);
  });

  it('accepts a tar with a ./ root entry and ./-prefixed names', async () => {
    const source = await normalizeUpload('tgz', await archiveOf('tgz', [{ name: './', type: 'directory' }, { name: './a', data: 'x' }]));
    assert.deepEqual((await list(source.archive)).map((e) => e.name), ['a']);
  });

  it('uses the defaults it documents', () => {
    assert.deepEqual({ ...DEFAULT_SOURCE_LIMITS }, { maxBytes: 200 * 1024 * 1024, maxFiles: 10_000, maxUploadBytes: 50 * 1024 * 1024 });
  });
});

describe('template sources: folders (normalizeDirectory)', () => {
  const dirs = tempDirs('gg-sources-');
  const fresh = () => dirs.fresh();

  it('gives the same digest as an upload of the same files, leaving .git out', async () => {
    const dir = await fresh();
    await mkdir(path.join(dir, 'project/bin'), { recursive: true });
    await mkdir(path.join(dir, '.git/objects'), { recursive: true });
    await writeFile(path.join(dir, '.git/config'), '[core]');
    await writeFile(path.join(dir, 'project/Dockerfile'), 'FROM scratch\n');
    await writeFile(path.join(dir, 'project/bin/run.sh'), '#!/bin/sh\n', { mode: 0o700 });
    await symlink('bin/run.sh', path.join(dir, 'project/run'));
    const fromDisk = await normalizeDirectory(dir);
    const upload = await normalizeUpload(
      'zip',
      writeZip([
        { name: 'project/run', data: 'bin/run.sh', mode: 0o120777 },
        { name: 'project/Dockerfile', data: 'FROM scratch\n' },
        { name: 'project/bin/run.sh', data: '#!/bin/sh\n', mode: 0o100755 },
      ]),
    );
    assert.equal(fromDisk.sha256, upload.sha256);
    assert.equal(fromDisk.files, 3);
  });

  it('refuses links out of the folder, without following them', async () => {
    const dir = await fresh();
    await writeFile(path.join(dir, 'f'), 'x');
    await symlink('/etc/passwd', path.join(dir, 'passwd'));
    await refused(normalizeDirectory(dir), 'SOURCE_LINK_ESCAPES', 'passwd');
    const dir2 = await fresh();
    await mkdir(path.join(dir2, 'sub'));
    await symlink('../..', path.join(dir2, 'sub/out'));
    await refused(normalizeDirectory(dir2), 'SOURCE_LINK_ESCAPES', 'sub/out');
  });

  it('refuses a FIFO and a socket', async () => {
    const dir = await fresh();
    execFileSync('mkfifo', [path.join(dir, 'pipe')]);
    await refused(normalizeDirectory(dir), 'SOURCE_SPECIAL_FILE', 'pipe');
    const dir2 = await fresh();
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path.join(dir2, 'sock'), resolve));
    try {
      await refused(normalizeDirectory(dir2), 'SOURCE_SPECIAL_FILE', 'sock');
    } finally {
      server.close();
    }
  });

  it('applies maxBytes and maxFiles', async () => {
    const dir = await fresh();
    for (let i = 0; i < 5; i++) await writeFile(path.join(dir, `f${i}`), 'x'.repeat(100));
    await refused(normalizeDirectory(dir, { maxFiles: 4 }), 'SOURCE_TOO_MANY_FILES');
    await refused(normalizeDirectory(dir, { maxBytes: 499 }), 'SOURCE_TOO_LARGE');
    assert.equal((await normalizeDirectory(dir, { maxBytes: 500, maxFiles: 5 })).bytes, 500);
  });

  it('refuses an empty folder', async () => {
    const dir = await fresh();
    await mkdir(path.join(dir, 'only/folders'), { recursive: true });
    await refused(normalizeDirectory(dir), 'SOURCE_EMPTY');
  });
});

describe('git source checks', () => {
  const ok = { ref: 'main' };
  const refusals: [string, string, SourceErrorCode][] = [
    ['ext::sh -c touch% /tmp/pwned', 'main', 'GIT_URL_REFUSED'],
    ['ext::sh', 'main', 'GIT_URL_REFUSED'],
    ['fd::17', 'main', 'GIT_URL_REFUSED'],
    ['-upload-pack=touch /tmp/x', 'main', 'GIT_URL_REFUSED'],
    ['--upload-pack=touch', 'main', 'GIT_URL_REFUSED'],
    ['file:///etc', 'main', 'GIT_URL_REFUSED'],
    ['/etc', 'main', 'GIT_URL_REFUSED'],
    ['./repo', 'main', 'GIT_URL_REFUSED'],
    ['http://x y', 'main', 'GIT_URL_REFUSED'],
    ['https://host/repo\n', 'main', 'GIT_URL_REFUSED'],
    ['ftp://host/repo', 'main', 'GIT_URL_REFUSED'],
    ['ssh://-oProxyCommand=touch%20x/repo', 'main', 'GIT_URL_REFUSED'],
    ['-oProxyCommand=x@host:repo', 'main', 'GIT_URL_REFUSED'],
    ['git@host:-repo', 'main', 'GIT_URL_REFUSED'],
    ['https://github.com/o/r.git', '--upload-pack=x', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', 'a..b', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', 'a b', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', 'a:b', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', 'a\tb', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', '.hidden', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', 'x.lock', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', 'a//b', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', 'a/', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', 'x@{1}', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', '@', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', 'a~1', 'GIT_REF_REFUSED'],
    ['https://github.com/o/r.git', '', 'GIT_REF_REFUSED'],
  ];
  for (const [url, ref, code] of refusals) {
    it(`refuses ${JSON.stringify(url)} at ${JSON.stringify(ref)} (${code})`, () => {
      const err = checkGitSource({ url, ref });
      assert.ok(err instanceof SourceRejectedError);
      assert.equal(err.code, code, err.message);
      assert.throws(() => parseGitSource({ url, ref }), (e: unknown) => e instanceof SourceRejectedError && e.code === code);
    });
  }

  it('allows network URLs, scp-like ssh, and file:// or absolute paths only when asked', () => {
    for (const url of ['https://github.com/o/r.git', 'http://127.0.0.1:8080/r', 'git://host/r.git', 'ssh://git@host:22/o/r.git', 'git@github.com:o/r.git', 'host.example:r.git', 'ssh://[::1]/r']) {
      assert.equal(checkGitUrl(url), undefined, url);
    }
    assert.equal(parseGitSource({ url: 'git@github.com:o/r.git', ...ok }).protocol, 'ssh');
    assert.equal(checkGitUrl('file:///srv/repo')?.code, 'GIT_URL_REFUSED');
    assert.equal(checkGitUrl('file:///srv/repo', { allowFileUrls: true }), undefined);
    assert.equal(checkGitUrl('/srv/repo', { allowFileUrls: true }), undefined);
    assert.equal(checkGitUrl('srv/repo', { allowFileUrls: true })?.code, 'GIT_URL_REFUSED');
    assert.equal(checkGitUrl('ext::sh -c x', { allowFileUrls: true })?.code, 'GIT_URL_REFUSED');
  });

  it('reads a full commit id as a commit, and names as names', () => {
    const sha = 'A'.repeat(40);
    assert.deepEqual(parseGitSource({ url: 'https://h/r', ref: sha }).ref, { kind: 'commit', value: 'a'.repeat(40) });
    assert.deepEqual(parseGitSource({ url: 'https://h/r', ref: 'release/v1.2' }).ref, { kind: 'name', value: 'release/v1.2' });
  });

  it('normalizes the subdirectory and refuses escapes', () => {
    assert.equal(parseGitSource({ url: 'https://h/r', ref: 'main', subdir: './a//b/' }).subdir, 'a/b');
    assert.equal(parseGitSource({ url: 'https://h/r', ref: 'main' }).subdir, '');
    for (const subdir of ['../x', 'a/../../x', '/etc', '.git', 'a\nb']) {
      assert.equal(checkGitSource({ url: 'https://h/r', ref: 'main', subdir })?.code, 'GIT_SUBDIR_REFUSED', subdir);
    }
  });

  it('never shows a password from a URL in a message', () => {
    const err = checkGitSource({ url: 'https://user:hunter2@host/r', ref: 'a..b' });
    assert.equal(err?.code, 'GIT_REF_REFUSED');
    const urlErr = checkGitUrl('https://user:hunter2@host/r x');
    assert.ok(urlErr && !urlErr.message.includes('hunter2'), urlErr?.message);
  });
});

/** A ustar header with any type flag, for entry types tar-stream cannot write. */
function rawTarHeader(name: string, typeflag: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0);
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write(typeflag, 156);
  h.write('ustar\x0000', 257);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return h;
}
