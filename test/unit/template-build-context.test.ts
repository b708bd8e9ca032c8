import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import tar, { type Header } from 'tar-stream';
import { InvalidSourceError, templateBuildContext } from '../../activities/templates/build-context.js';
import { LogLines, engineMessages } from '../../activities/templates/engine-stream.js';

type Entry = Partial<Header> & { name: string; body?: string };

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p);
  return Buffer.concat(parts);
}

async function sourceArchive(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const { body, ...header } of entries) pack.entry(header, body ?? '');
  pack.finalize();
  return gzipSync(await collect(pack as AsyncIterable<Buffer>));
}

async function entriesOf(context: Readable): Promise<(Header & { body: string })[]> {
  const extract = tar.extract();
  const feeding = collect(context).then((tarBytes) => Readable.from([tarBytes]).pipe(extract as unknown as NodeJS.WritableStream));
  const out: (Header & { body: string })[] = [];
  for await (const entry of extract) out.push({ ...entry.header, body: (await collect(entry as AsyncIterable<Buffer>)).toString() });
  await feeding;
  return out;
}

const MTIME = new Date('2020-01-02T03:04:05Z');

describe('template build context', () => {
  it('is the Dockerfile and the source under template/, with modes, folders, links and times', async () => {
    const source = await sourceArchive([
      { name: './', type: 'directory', mode: 0o755, mtime: MTIME },
      { name: './bin/', type: 'directory', mode: 0o750, mtime: MTIME },
      { name: './bin/run.sh', mode: 0o755, mtime: MTIME, body: '#!/bin/sh\necho hi\n' },
      { name: 'main.tf', mode: 0o644, mtime: MTIME, body: 'terraform {}\n' },
      { name: 'run', type: 'symlink', linkname: 'bin/run.sh', mtime: MTIME },
      { name: 'abs', type: 'symlink', linkname: '/etc/passwd', mtime: MTIME },
      { name: 'again.tf', type: 'link', linkname: './main.tf', mtime: MTIME },
      { name: 'suid', mode: 0o4755, mtime: MTIME, body: 'x' },
      { name: `deep/${'d'.repeat(120)}/${'f'.repeat(120)}`, mode: 0o600, mtime: MTIME, body: 'long name' },
    ]);
    const entries = await entriesOf(templateBuildContext('FROM x\n', source));
    const byName = new Map(entries.map((e) => [e.name, e]));
    assert.deepEqual(
      entries.map((e) => e.name),
      ['Dockerfile', 'template/', 'template/bin/', 'template/bin/run.sh', 'template/main.tf', 'template/run', 'template/abs', 'template/again.tf', 'template/suid', `template/deep/${'d'.repeat(120)}/${'f'.repeat(120)}`],
    );
    assert.equal(byName.get('Dockerfile')!.body, 'FROM x\n');
    assert.equal(byName.get('template/bin/')!.mode, 0o750);
    assert.equal(byName.get('template/bin/run.sh')!.mode, 0o755);
    assert.equal(byName.get('template/bin/run.sh')!.body, '#!/bin/sh\necho hi\n');
    assert.equal(byName.get('template/bin/run.sh')!.mtime.getTime(), MTIME.getTime());
    assert.equal(byName.get('template/run')!.type, 'symlink');
    assert.equal(byName.get('template/run')!.linkname, 'bin/run.sh');
    assert.equal(byName.get('template/abs')!.linkname, '/etc/passwd');
    assert.equal(byName.get('template/again.tf')!.type, 'link');
    assert.equal(byName.get('template/again.tf')!.linkname, 'template/main.tf');
    assert.equal(byName.get('template/suid')!.mode, 0o755, 'set-user-ID is dropped');
    assert.ok(entries.every((e) => e.uid === 0 && e.gid === 0));
  });

  it('makes the template folder when the source has no root entry, or nothing at all', async () => {
    const named = await entriesOf(templateBuildContext('FROM x\n', await sourceArchive([{ name: 'a.txt', body: 'a' }])));
    assert.deepEqual(named.map((e) => [e.name, e.type]), [['Dockerfile', 'file'], ['template/', 'directory'], ['template/a.txt', 'file']]);
    const empty = await entriesOf(templateBuildContext('FROM x\n', await sourceArchive([])));
    assert.deepEqual(empty.map((e) => e.name), ['Dockerfile', 'template/']);
  });

  it('is the same bytes for the same input', async () => {
    const source = await sourceArchive([{ name: 'a', mtime: MTIME, body: 'a' }, { name: 'b/', type: 'directory', mtime: MTIME }]);
    assert.deepEqual(await collect(templateBuildContext('FROM x\n', source)), await collect(templateBuildContext('FROM x\n', source)));
  });

  it('fails on entries outside the folder or of other kinds, and on archives that are not tar + gzip', async () => {
    const fails = async (source: Buffer, pattern: RegExp) => {
      await assert.rejects(collect(templateBuildContext('FROM x\n', source)), (err: Error) => {
        assert.match(err.message, pattern);
        return true;
      });
    };
    await fails(await sourceArchive([{ name: '../Dockerfile', body: 'FROM evil' }]), /outside the template folder/);
    await fails(await sourceArchive([{ name: 'a/../../x', body: 'x' }]), /outside the template folder/);
    await fails(await sourceArchive([{ name: '/etc/x', body: 'x' }]), /outside the template folder/);
    await fails(await sourceArchive([{ name: 'l', type: 'link', linkname: '../Dockerfile' }]), /hard link/);
    await fails(await sourceArchive([{ name: 'fifo', type: 'fifo' }]), /fifo/);
    await fails(Buffer.from('not gzip at all'), /header|gzip|incorrect/i);
    await assert.rejects(collect(templateBuildContext('FROM x\n', await sourceArchive([{ name: '../x', body: '' }]))), InvalidSourceError);
  });
});

describe('engine progress streams', () => {
  it('parses JSON lines split anywhere, and turns them into log lines', async () => {
    const raw = '{"stream":"Step 1/3 : FROM x"}\r\n{"stream":"\\n"}\r\n{"status":"Pushing","progressDetail":{"current":1,"total":9},"id":"abc"}\r\n{"status":"Pushed","progressDetail":{},"id":"abc"}\r\n{"stream":" ---> 0123456789ab\\nStep 2/3"}\r\n{"errorDetail":{"message":"boom"},"error":"boom"}\r\nnot json\r\n';
    const pieces = [raw.slice(0, 7), raw.slice(7, 60), raw.slice(60, 61), raw.slice(61)];
    const lines: string[] = [];
    const log = new LogLines((l) => lines.push(l));
    for await (const m of engineMessages(Readable.from(pieces.map((p) => Buffer.from(p))))) log.message(m);
    log.flush();
    assert.deepEqual(lines, ['Step 1/3 : FROM x', 'abc: Pushed', ' ---> 0123456789ab', 'Step 2/3', 'error: boom', 'not json']);
  });
});
