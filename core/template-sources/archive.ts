import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import type { SourceTree, TreeEntry } from './tree.js';

export interface NormalizedSource {
  /** tar + gzip, deterministic: the same tree always gives the same bytes (with the same zlib build). */
  archive: Buffer;
  /** Hex SHA-256 of `archive`. */
  sha256: string;
  /** Regular files and symbolic links (folders not counted). */
  files: number;
  /** Uncompressed bytes of the regular files. */
  bytes: number;
}

export const GZIP_LEVEL = 6;

/**
 * Nothing of where a tree came from reaches the archive: entries in byte order of their paths, modes
 * reduced to 0644/0755 (0755 when any execute bit was set; folders 0755, links 0777), owner 0:0 without
 * names, every mtime 0, and the gzip header's own mtime 0 (Node writes it so). A zip and a tgz of the same
 * files therefore give the same digest. zlib's output is only guaranteed stable for one zlib build, so a
 * digest may change with a Node upgrade; it identifies content within a deployment, not forever.
 */
export async function writeArchive(tree: SourceTree): Promise<NormalizedSource> {
  const entries = tree.list();
  const pack = tar.pack();
  const hash = createHash('sha256');
  const parts: Buffer[] = [];
  const writing = pipeline(pack, zlib.createGzip({ level: GZIP_LEVEL }), async (gzipped: AsyncIterable<Buffer>) => {
    for await (const part of gzipped) {
      hash.update(part);
      parts.push(part);
    }
  });
  writing.catch(() => undefined); // awaited below, or replaced by the error that stopped the packing
  try {
    for (const entry of entries) await writeEntry(pack, entry);
    pack.finalize();
    await writing;
  } catch (err) {
    pack.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
  return { archive: Buffer.concat(parts), sha256: hash.digest('hex'), files: tree.files, bytes: tree.bytes };
}

const FIXED = { uid: 0, gid: 0, uname: '', gname: '', mtime: new Date(0) };

/**
 * Adds one entry and settles once it is in the archive. A pack destroyed meanwhile (the archive failed)
 * destroys its entries with its error: the callback reports it, and the listener keeps the entry's own
 * 'error' event from being thrown out of the process.
 */
function addEntry(pack: tar.Pack, header: Parameters<tar.Pack['entry']>[0], chunks: Buffer[] = []): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const sink = pack.entry(header, (err?: Error | null) => (err ? reject(err) : resolve()));
    sink.on('error', () => undefined);
    chunks.forEach((chunk) => sink.write(chunk));
    if (header.type === 'file') sink.end(null);
  });
}

async function writeEntry(pack: tar.Pack, entry: TreeEntry): Promise<void> {
  switch (entry.kind) {
    case 'dir':
      return addEntry(pack, { ...FIXED, name: `${entry.path}/`, type: 'directory', mode: 0o755 });
    case 'symlink':
      return addEntry(pack, { ...FIXED, name: entry.path, type: 'symlink', linkname: entry.target, mode: 0o777 });
    case 'file': {
      const chunks = 'chunks' in entry.content ? entry.content.chunks : [await readFromDisk(entry.content.diskPath, entry.size)];
      return addEntry(pack, { ...FIXED, name: entry.path, type: 'file', mode: entry.executable ? 0o755 : 0o644, size: entry.size }, chunks);
    }
  }
}

/**
 * A checkout's file, read when it is archived: never through a link, and only if it is still the regular
 * file of the size counted when the folder was walked.
 */
async function readFromDisk(file: string, size: number): Promise<Buffer> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.size !== size) throw new Error(`${file} changed while it was being archived`);
    const content = await handle.readFile();
    if (content.length !== size) throw new Error(`${file} changed while it was being archived`);
    return content;
  } finally {
    await handle.close();
  }
}
