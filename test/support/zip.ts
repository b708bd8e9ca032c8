/**
 * A minimal zip writer for tests: stored and deflate entries with any Unix mode (links, devices), and the
 * ability to lie in headers (sizes, CRC), which no real zip tool offers and hostile-input tests need.
 */
import { once } from 'node:events';
import zlib from 'node:zlib';

export interface ZipEntrySpec {
  name: string;
  data?: Buffer | string;
  /** Full Unix mode with the type bits (0o100644 file, 0o040755 folder, 0o120777 link, 0o020644 char device). */
  mode?: number;
  method?: 'store' | 'deflate';
  /** `versionMadeBy`'s host: 3 (Unix, default) makes the mode count; 0 (MS-DOS) makes it ignored. */
  host?: number;
  /** Already deflated content (with `uncompressedSize` and `crc`), for entries too big to hold inflated. */
  deflated?: Buffer;
  uncompressedSize?: number;
  crc?: number;
}

export function writeZip(entries: ZipEntrySpec[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const data = typeof e.data === 'string' ? Buffer.from(e.data) : (e.data ?? Buffer.alloc(0));
    const method = e.deflated || e.method === 'deflate' ? 8 : 0;
    const body = e.deflated ?? (method === 8 ? zlib.deflateRawSync(data) : data);
    const size = e.uncompressedSize ?? data.length;
    const crc = e.crc ?? zlib.crc32(data);
    const isDir = e.name.endsWith('/');
    const mode = e.mode ?? (isDir ? 0o040755 : 0o100644);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // names are UTF-8
    local.writeUInt16LE(method, 8);
    local.writeUInt16LE(0, 10);
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc >>> 0, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(((e.host ?? 3) << 8) | 20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(method, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc >>> 0, 16);
    central.writeUInt32LE(body.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE((((mode & 0xffff) << 16) | (isDir ? 0x10 : 0)) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, body);
    centrals.push(central, name);
    offset += local.length + name.length + body.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** `size` zero bytes deflated (raw, as in a zip), streamed so the zeros never exist all at once; with their CRC. */
export async function deflatedZeros(size: number, format: 'raw' | 'gzip' = 'raw', prefix?: Buffer): Promise<{ deflated: Buffer; crc: number }> {
  const deflate = format === 'raw' ? zlib.createDeflateRaw({ level: 9 }) : zlib.createGzip({ level: 9 });
  const parts: Buffer[] = [];
  deflate.on('data', (p: Buffer) => parts.push(p));
  const zeros = Buffer.alloc(1024 * 1024);
  let crc = 0;
  if (prefix) deflate.write(prefix);
  for (let left = size; left > 0; left -= zeros.length) {
    const piece = left >= zeros.length ? zeros : zeros.subarray(0, left);
    crc = zlib.crc32(piece, crc);
    if (!deflate.write(piece)) await once(deflate, 'drain');
  }
  deflate.end();
  await once(deflate, 'end');
  return { deflated: Buffer.concat(parts), crc };
}
