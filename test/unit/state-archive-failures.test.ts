/**
 * Failures in the middle of a state archive's streams, on real files: each one ends as an error (or a
 * warning) for the one caller, never as an uncaught exception or an unhandled rejection, leaves no file
 * open, and stops the folder walk or the archive source instead of leaving it hanging.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, readlink, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { packState, unpackState } from '../../activities/execution/state-archive.js';
import { tempDirs } from '../support/temp-dirs.js';

const openFds = async (): Promise<string[]> => (await readdir('/proc/self/fd')).sort();
const settle = () => new Promise((r) => setTimeout(r, 200));

async function* from(pieces: Buffer[]): AsyncGenerator<Buffer> {
  for (const p of pieces) yield await Promise.resolve(p);
}

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p);
  return Buffer.concat(parts);
}

describe('state archives under failure', () => {
  const dirs = tempDirs('gg-archive-fail-');
  let crashes: unknown[] = [];
  let fdsBefore: string[] = [];
  const onCrash = (err: unknown) => crashes.push(err);
  /** The test's own files that are open now and were not before it: not whatever the runtime opened meanwhile. */
  const ourOpenFiles = async () => {
    const opened: string[] = [];
    for (const fd of (await openFds()).filter((f) => !fdsBefore.includes(f))) {
      const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
      if (target.includes('gg-archive-fail-')) opened.push(target);
    }
    return opened;
  };

  beforeEach(async () => {
    crashes = [];
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
    fdsBefore = await openFds();
  });
  afterEach(async () => {
    await settle();
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    assert.deepEqual(crashes, [], 'no uncaught exception or unhandled rejection');
    // A close on a loaded machine may take longer than the settle; a leaked file stays open however long we wait.
    let opened = await ourOpenFiles();
    for (let waited = 0; opened.length > 0 && waited < 5_000; waited += 100) {
      await new Promise((r) => setTimeout(r, 100));
      opened = await ourOpenFiles();
    }
    assert.deepEqual(opened, [], 'no file left open');
  });

  /** A state folder with a file far larger than what the streams buffer, and a FIFO the walk reaches after it. */
  async function bigState(): Promise<string> {
    const dir = await dirs.fresh();
    await writeFile(path.join(dir, 'a-big'), randomBytes(24 * 1024 * 1024));
    execFileSync('mkfifo', [path.join(dir, 'z-fifo')]);
    return dir;
  }

  for (const how of ['stops reading (its store failed)', 'destroys the stream', 'destroys the stream with an error'] as const) {
    it(`stops the walk and closes the file when the reader ${how}`, async () => {
      const warnings: string[] = [];
      const archive = packState(await bigState(), (w) => warnings.push(w));
      let read = 0;
      const reading = (async () => {
        for await (const chunk of archive) {
          read += (chunk as Buffer).length;
          if (read < 512 * 1024) continue;
          if (how === 'stops reading (its store failed)') throw new Error('the store failed');
          archive.destroy(how === 'destroys the stream' ? undefined : new Error('gone'));
        }
      })();
      await assert.rejects(reading, how === 'stops reading (its store failed)' ? /the store failed/ : /gone|premature close|aborted/i);
      await settle();
      assert.deepEqual(warnings, [], 'the walk never went on to the FIFO');
    });
  }

  it('walks nothing and opens no file until it is read, so a store that fails before reading leaves nothing behind', async () => {
    const warnings: string[] = [];
    const archive = packState(await bigState(), (w) => warnings.push(w));
    await settle();
    assert.deepEqual(await ourOpenFiles(), [], 'no file is open');
    assert.deepEqual(warnings, []);
    archive.destroy();
  });

  it('holds a bounded amount of memory however large the file it archives', async () => {
    const dir = await dirs.fresh();
    const file = await open(path.join(dir, 'large'), 'w');
    const block = Buffer.alloc(1024 * 1024, 7);
    for (let i = 0; i < 512; i++) await file.write(block);
    await file.close();
    const start = process.memoryUsage().rss;
    let peak = start;
    const sampling = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
    try {
      for await (const _ of packState(dir, () => undefined)) peak = Math.max(peak, process.memoryUsage().rss);
    } finally {
      clearInterval(sampling);
    }
    const grew = Math.round((peak - start) / (1024 * 1024));
    assert.ok(grew < 256, `archiving 512 MiB grew the process by ${grew} MiB`);
  });

  it('fails the stream with the error when the walk fails half-way (a path longer than PATH_MAX)', async () => {
    const dir = await dirs.fresh();
    await writeFile(path.join(dir, 'a-big'), randomBytes(4 * 1024 * 1024));
    // Made one level at a time relative to the last, as a template in /state could.
    const deep = `const fs = require('node:fs'); process.chdir(process.argv[1]);
      for (let i = 0; i < 45; i++) { fs.mkdirSync('${'d'.repeat(100)}'); process.chdir('${'d'.repeat(100)}'); }
      fs.writeFileSync('file', 'deep');`;
    execFileSync(process.execPath, ['-e', deep, dir]);
    try {
      const archive = packState(dir, () => undefined);
      await assert.rejects(collect(archive), (err: NodeJS.ErrnoException) => err.code === 'ENAMETOOLONG');
    } finally {
      execFileSync('rm', ['-rf', dir]); // Node's rm cannot reach that deep either
    }
  });

  it('archives a file that shrinks while it is read, with zeros and a warning', async () => {
    const dir = await dirs.fresh();
    const content = randomBytes(16 * 1024 * 1024);
    await writeFile(path.join(dir, 'shrinking'), content);
    const warnings: string[] = [];
    const parts: Buffer[] = [];
    let cut = false;
    for await (const chunk of packState(dir, (w) => warnings.push(w))) {
      parts.push(chunk as Buffer);
      if (!cut) {
        cut = true;
        await truncate(path.join(dir, 'shrinking'), 0);
      }
    }
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /shrinking shrank while being archived/);
    const restored = await dirs.fresh();
    await unpackState(restored, from([Buffer.concat(parts)]));
    const back = await readFile(path.join(restored, 'shrinking'));
    assert.equal(back.length, content.length, 'the size the header promised');
    const kept = back.findIndex((b, i) => b !== content[i]);
    assert.ok(back.subarray(kept).every((b) => b === 0), 'what was not read any more is zeros');
  });

  describe('restoring', () => {
    async function archiveOf(): Promise<Buffer> {
      const dir = await dirs.fresh();
      for (let i = 0; i < 4; i++) await writeFile(path.join(dir, `f${i}`), randomBytes(2 * 1024 * 1024));
      return collect(packState(dir, () => undefined));
    }
    const pieces = (archive: Buffer, size = 256 * 1024): Buffer[] =>
      Array.from({ length: Math.ceil(archive.length / size) }, (_, i) => archive.subarray(i * size, (i + 1) * size));

    it('fails with the source\'s error when its iterator throws half-way', async () => {
      const archive = await archiveOf();
      async function* failing(): AsyncGenerator<Buffer> {
        const all = pieces(archive);
        for (const [i, p] of all.entries()) {
          if (i === Math.floor(all.length / 2)) throw new Error('the store went away');
          yield await Promise.resolve(p);
        }
      }
      await assert.rejects(unpackState(await dirs.fresh(), failing()), /the store went away/);
    });

    it('fails on a corrupt archive', async () => {
      const archive = Buffer.from(await archiveOf());
      randomBytes(4096).copy(archive, Math.floor(archive.length / 2));
      await assert.rejects(unpackState(await dirs.fresh(), from(pieces(archive))));
    });

    it('fails on an archive cut half-way', async () => {
      const archive = await archiveOf();
      await assert.rejects(unpackState(await dirs.fresh(), from(pieces(archive.subarray(0, archive.length / 2)))), /unexpected end/i);
    });

    it('stops reading its source when writing the folder fails half-way', async () => {
      const archive = await archiveOf();
      const target = await dirs.fresh();
      await mkdir(path.join(target, 'f2'));
      let closed = false;
      let served = 0;
      async function* source(): AsyncGenerator<Buffer> {
        try {
          for (const p of pieces(archive)) {
            served++;
            yield await Promise.resolve(p);
          }
        } finally {
          closed = true;
        }
      }
      await assert.rejects(unpackState(target, source()), (err: NodeJS.ErrnoException) => err.code === 'EEXIST');
      await settle();
      assert.ok(closed, 'the source was closed');
      assert.ok(served < pieces(archive).length, 'and not read to its end');
      assert.equal((await stat(path.join(target, 'f1'))).size, 2 * 1024 * 1024, 'what came before is restored');
    });
  });
});
