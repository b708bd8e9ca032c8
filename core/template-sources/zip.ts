import zlib from 'node:zlib';
import type { Readable } from 'node:stream';
import yauzl from 'yauzl';
import { SourceRejectedError, quote } from './errors.js';
import { inflateSlowly } from './inflate.js';
import { MAX_PATH_BYTES, type SourceLimits } from './limits.js';
import { checkLinkTarget, normalizeEntryPath } from './paths.js';
import type { SourceTree } from './tree.js';

// File types in the upper 16 bits of externalFileAttributes, when a Unix zip tool wrote them.
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const SPECIAL: Record<number, string> = { 0o020000: 'character device', 0o060000: 'block device', 0o010000: 'FIFO', 0o140000: 'socket' };
/** `versionMadeBy` hosts whose attributes are Unix modes: Unix, and macOS (which Info-ZIP marks as 19). */
const UNIX_HOSTS = new Set([3, 19]);
const MSDOS_DIRECTORY = 0x10;

/**
 * Reads a .zip into `tree`. Sizes and CRCs in the zip's headers are checked against what is actually
 * inflated (yauzl's own size check is off so that passing maxBytes is reported as SOURCE_TOO_LARGE, not
 * as a corrupt archive), and inflation is ours (inflateSlowly), counted as it goes.
 */
export async function readZip(data: Buffer, tree: SourceTree, limits: Required<SourceLimits>): Promise<void> {
  let zip: yauzl.ZipFile;
  try {
    // decodeStrings off: yauzl would otherwise refuse `..` and absolute names itself, with one generic message.
    zip = await yauzl.fromBufferPromise(data, { lazyEntries: true, decodeStrings: false, validateEntrySizes: false, strictFileNames: false });
  } catch (err) {
    throw new SourceRejectedError('SOURCE_BAD_ARCHIVE', `not a valid .zip archive: ${err instanceof Error ? err.message : String(err)}`);
  }
  // The count in the central directory is only trusted to refuse early; the tree counts entries again.
  if (zip.entryCount > limits.maxFiles) {
    throw new SourceRejectedError('SOURCE_TOO_MANY_FILES', `the archive has ${zip.entryCount} entries, more than ${limits.maxFiles}`);
  }
  try {
    for await (const entry of zip.eachEntry()) await readEntry(zip, entry, tree);
  } catch (err) {
    if (err instanceof SourceRejectedError) throw err;
    throw new SourceRejectedError('SOURCE_BAD_ARCHIVE', `not a valid .zip archive: ${err instanceof Error ? err.message : String(err)}`);
  }
}

async function readEntry(zip: yauzl.ZipFile, entry: yauzl.Entry, tree: SourceTree): Promise<void> {
  // With decodeStrings off, fileName is the raw bytes (the types say string); decoded as yauzl would (CP437
  // or UTF-8, the Info-ZIP Unicode path field first), backslashes turned into slashes as Windows tools mean them.
  const raw = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileName as unknown as Buffer, entry.extraFields, false);
  const path = normalizeEntryPath(raw, { windowsDrives: true });
  const mode = UNIX_HOSTS.has(entry.versionMadeBy >> 8) ? entry.externalFileAttributes >>> 16 : 0;
  const type = mode & S_IFMT;
  const special = SPECIAL[type];
  if (special) {
    throw new SourceRejectedError('SOURCE_SPECIAL_FILE', `${quote(raw)} is a ${special}; only files, folders and symbolic links are allowed`, raw);
  }
  const isDir = type === S_IFDIR || ((type === 0 || type === S_IFREG) && (raw.endsWith('/') || (entry.externalFileAttributes & MSDOS_DIRECTORY) !== 0));
  if (isDir) {
    tree.addDir(path, raw);
    return;
  }
  if (type !== 0 && type !== S_IFREG && type !== S_IFLNK) {
    throw new SourceRejectedError('SOURCE_UNSUPPORTED_ENTRY', `${quote(raw)} has an unknown file type (mode ${mode.toString(8)})`, raw);
  }
  if (entry.isEncrypted()) throw new SourceRejectedError('SOURCE_UNSUPPORTED_ENTRY', `${quote(raw)} is encrypted`, raw);
  if (entry.compressionMethod !== 0 && entry.compressionMethod !== 8) {
    throw new SourceRejectedError('SOURCE_UNSUPPORTED_ENTRY', `${quote(raw)} uses compression method ${entry.compressionMethod}; only stored and deflate are supported`, raw);
  }
  if (type === S_IFLNK) {
    // A zipped link is an entry whose content is its target. The declared size is checked first, and
    // readContent holds the content to it, so at most MAX_PATH_BYTES (plus one chunk) is ever inflated.
    if (entry.uncompressedSize > MAX_PATH_BYTES) {
      throw new SourceRejectedError('SOURCE_BAD_PATH', `link ${quote(raw)} has a target longer than ${MAX_PATH_BYTES} bytes`, raw);
    }
    const target = Buffer.concat(await readContent(zip, entry, raw, () => undefined)).toString('utf8');
    checkLinkTarget(raw, target);
    tree.addSymlink(path, raw, target);
    return;
  }
  tree.checkDeclaredSize(entry.uncompressedSize, raw);
  const chunks = await readContent(zip, entry, raw, (n) => tree.countBytes(n, raw));
  tree.addFile(path, raw, { executable: (mode & 0o111) !== 0, size: entry.uncompressedSize, content: { chunks } });
}

/**
 * An entry's content, inflated in small steps; `count` sees every chunk before anything else is done
 * with it (and throws to stop). The result is also checked against the entry's declared size and CRC.
 */
async function readContent(zip: yauzl.ZipFile, entry: yauzl.Entry, raw: string, count: (n: number) => void): Promise<Buffer[]> {
  const stored = await collect(await zip.openReadStreamPromise(entry, { decodeFileData: false }));
  const pieces = entry.compressionMethod === 0 ? [stored] : inflateSlowly(stored, 'deflate-raw');
  const chunks: Buffer[] = [];
  let size = 0;
  let crc = 0;
  for await (const chunk of pieces) {
    count(chunk.length);
    size += chunk.length;
    if (size > entry.uncompressedSize) {
      throw new SourceRejectedError('SOURCE_BAD_ARCHIVE', `${quote(raw)} holds more bytes than its header says (${entry.uncompressedSize}); the archive is corrupt or crafted`, raw);
    }
    crc = zlib.crc32(chunk, crc);
    chunks.push(Buffer.from(chunk)); // a copy: zlib's chunks are views into 64 KiB buffers, kept alive otherwise
  }
  if (size !== entry.uncompressedSize || crc !== entry.crc32) {
    throw new SourceRejectedError('SOURCE_BAD_ARCHIVE', `${quote(raw)} is corrupt (its ${size !== entry.uncompressedSize ? 'size' : 'CRC'} does not match its header)`, raw);
  }
  return chunks;
}

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream as AsyncIterable<Buffer>) parts.push(part);
  return Buffer.concat(parts);
}
