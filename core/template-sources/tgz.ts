import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { SourceRejectedError, quote } from './errors.js';
import { inflateSlowly } from './inflate.js';
import type { SourceLimits } from './limits.js';
import { checkLinkTarget, cut, normalizeEntryPath } from './paths.js';
import type { SourceTree } from './tree.js';

/**
 * Tar headers, padding and long-name/pax records are not content, so they are not counted in maxBytes,
 * but the tar stream as a whole is bounded too: otherwise a gzip of endless zero blocks (which tar-stream
 * skips as end-of-archive markers) or of huge pax records would be inflated without limit.
 */
const TAR_OVERHEAD_PER_ENTRY = 4096;
const TAR_OVERHEAD_BASE = 1024 * 1024;

/** Reads a .tar.gz into `tree`, counting every byte as it is inflated. Throws SourceRejectedError. */
export async function readTgz(data: Buffer, tree: SourceTree, limits: Required<SourceLimits>): Promise<void> {
  const tarCap = limits.maxBytes + limits.maxFiles * TAR_OVERHEAD_PER_ENTRY + TAR_OVERHEAD_BASE;
  let tarBytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      tarBytes += chunk.length;
      if (tarBytes > tarCap) {
        done(new SourceRejectedError('SOURCE_TOO_LARGE', `the archive's tar stream is larger than ${tarCap} bytes uncompressed`));
      } else {
        done(null, chunk);
      }
    },
  });
  const extract = tar.extract();
  const feeding = pipeline(Readable.from(inflateSlowly(data, 'gzip')), counter, extract);
  feeding.catch(() => undefined); // the same error ends the iteration below
  try {
    for await (const entry of extract) {
      // tar-stream's entries are streamx Readables: async-iterable, though its types do not say so.
      await readEntry(entry.header, entry as unknown as AsyncIterable<Buffer>, tree);
    }
    await feeding;
  } catch (err) {
    throw asRejection(err);
  }
}

async function readEntry(header: tar.Header, content: AsyncIterable<Buffer>, tree: SourceTree): Promise<void> {
  const raw = header.name;
  const sparse = Object.keys(header.pax ?? {}).some((key) => key.startsWith('GNU.sparse.'));
  const path = normalizeEntryPath(raw);
  switch (sparse ? 'sparse' : header.type) {
    case 'file':
    case 'contiguous-file': {
      // The size in the header frames the entry, so it cannot lie; refusing on it saves inflating a bomb at all.
      tree.checkDeclaredSize(header.size ?? 0, raw);
      const chunks: Buffer[] = [];
      let read = 0;
      for await (const chunk of content) {
        tree.countBytes(chunk.length, raw);
        read += chunk.length;
        chunks.push(Buffer.from(chunk)); // a copy: the chunk is a view into a much larger inflated buffer
      }
      tree.addFile(path, raw, { executable: ((header.mode ?? 0) & 0o111) !== 0, size: read, content: { chunks } });
      return;
    }
    case 'directory':
      await drain(content);
      tree.addDir(path, raw);
      return;
    case 'symlink': {
      await drain(content);
      const target = header.linkname ?? '';
      checkLinkTarget(raw, target);
      tree.addSymlink(path, raw, target);
      return;
    }
    case 'link':
      throw new SourceRejectedError('SOURCE_HARDLINK', `${quote(raw)} is a hard link (to ${quote(header.linkname ?? '')}); hard links are not allowed, use a file or a symbolic link`, raw);
    case 'character-device':
    case 'block-device':
    case 'fifo':
      throw new SourceRejectedError('SOURCE_SPECIAL_FILE', `${quote(raw)} is a ${header.type.replace('-', ' ')}; only files, folders and symbolic links are allowed`, raw);
    case 'sparse':
      throw new SourceRejectedError('SOURCE_UNSUPPORTED_ENTRY', `${quote(raw)} is a sparse file; archive it without --sparse`, raw);
    default:
      // tar-stream reports types it does not know (GNU sparse 'S', volume labels, ...) as null.
      throw new SourceRejectedError('SOURCE_UNSUPPORTED_ENTRY', `${quote(cut(raw))} has an unknown tar entry type (GNU sparse, volume label or other); only files, folders and symbolic links are allowed`, cut(raw));
  }
}

async function drain(content: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of content) {
    // a folder's or link's data is meaningless; tar-stream needs it read to move on
  }
}

function asRejection(err: unknown): SourceRejectedError {
  if (err instanceof SourceRejectedError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new SourceRejectedError('SOURCE_BAD_ARCHIVE', `not a valid .tar.gz archive: ${detail}`);
}
