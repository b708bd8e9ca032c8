import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import zlib from 'node:zlib';
import tar from 'tar-stream';

/** A template's files: path → content (a string, or { content, mode }). */
export type Files = Record<string, string | { content: string; mode: number }>;

export async function tgzOf(files: Files): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, f] of Object.entries(files)) {
    const { content, mode } = typeof f === 'string' ? { content: f, mode: 0o644 } : f;
    pack.entry({ name, mode }, content);
  }
  pack.finalize();
  return buffer(Readable.from(pack).pipe(zlib.createGzip()));
}

function run(cmd: string, args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', HOME: cwd } });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} failed (${code}): ${err}`))));
  });
}

/** A bare git repository with one commit of the files on `main`; its folder (serve it with `git daemon`). */
export async function gitRepoOf(files: Files, into: string): Promise<string> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'gg-git-work-'));
  try {
    for (const [name, f] of Object.entries(files)) {
      const { content, mode } = typeof f === 'string' ? { content: f, mode: 0o644 } : f;
      await mkdir(path.dirname(path.join(work, name)), { recursive: true });
      await writeFile(path.join(work, name), content, { mode });
    }
    await run('git', ['init', '-q', '-b', 'main'], work);
    await run('git', ['add', '.'], work);
    await run('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.com', 'commit', '-q', '-m', 'template'], work);
    await run('git', ['tag', 'v1'], work);
    await mkdir(path.dirname(into), { recursive: true });
    await run('git', ['clone', '-q', '--bare', work, into], os.tmpdir());
    return into;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** A .zip of the files (stored, not deflated), with unix modes: enough for tests, no zip tool needed. */
export function zipOf(files: Files): Promise<Buffer> {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, f] of Object.entries(files)) {
    const { content, mode } = typeof f === 'string' ? { content: f, mode: 0o644 } : f;
    const data = Buffer.from(content);
    const nameBytes = Buffer.from(name);
    const crc = zlib.crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    locals.push(local, nameBytes, data);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by unix
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBytes.length, 28);
    central.writeUInt32LE(((0o100000 | mode) << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Object.keys(files).length, 8);
  end.writeUInt16LE(Object.keys(files).length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Promise.resolve(Buffer.concat([...locals, directory, end]));
}
