import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readlink, symlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';

export const GZIP_LEVEL = 6;

/** How much of a file is read at once while it is archived. */
const READ_BYTES = 256 * 1024;

type EntrySink = ReturnType<tar.Pack['entry']>;

/**
 * Archives a run's /state as tar + gzip, streamed. The folder is the template's to fill, so nothing in it
 * is trusted: symbolic links are stored as links and never followed, files are opened without following
 * links and must still be regular files once open, and FIFOs, sockets and devices are skipped (with a
 * warning) instead of being read, which could block or reach outside.
 *
 * Every failure ends as one error on the returned stream, never as an 'error' event nobody listens to: a
 * file that cannot be read or a folder that cannot be walked destroys it with that error. A reader that
 * stops early (its store failed) or destroys it stops the walk, and the open file is closed. Nothing is
 * read before the stream is: a store that fails before it reads a byte leaves no walk waiting and no file open.
 */
export function packState(dir: string, warn: (message: string) => void): Readable {
  return Readable.from(packing(dir, warn), { objectMode: false });
}

async function* packing(dir: string, warn: (message: string) => void): AsyncGenerator<Buffer> {
  const archive = startPacking(dir, warn);
  try {
    yield* archive as AsyncIterable<Buffer>;
  } finally {
    archive.destroy(); // a reader that left early: stops the walk (a no-op once the archive has ended)
  }
}

function startPacking(dir: string, warn: (message: string) => void): Readable {
  const pack = tar.pack();
  const gzip = zlib.createGzip({ level: GZIP_LEVEL, chunkSize: 256 * 1024 });
  // streamx's pipe with a callback: an error or an early close of either side destroys the other (a reader
  // destroying gzip destroys the pack, which destroys its current entry), and the callback takes the error
  // instead of an 'error' event on the pack.
  (pack as unknown as { pipe(to: NodeJS.WritableStream, done: (err: Error | null) => void): void }).pipe(gzip, () => undefined);
  let stopped = false;
  pack.once('close', () => {
    stopped = true;
  });

  /** Adds one entry and settles when it is whole in the archive, or fails when the pack is destroyed. */
  const entry = (header: Partial<tar.Header> & { name: string }, write?: (sink: EntrySink) => Promise<void>): Promise<void> => {
    if (stopped) return Promise.reject(new Error('the state archive was stopped'));
    let sink!: EntrySink;
    const done = new Promise<void>((resolve, reject) => {
      sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    });
    // A destroyed pack destroys its entries with its error; the callback above reports it, this keeps the
    // sink's own 'error' event from being thrown.
    sink.on('error', () => undefined);
    if (!write) return done;
    done.catch(() => undefined); // a copy that fails reports its own error; this one is then beside the point
    return write(sink).then(
      () => done,
      (err: unknown) => {
        sink.destroy(err instanceof Error ? err : new Error(String(err)));
        throw err;
      },
    );
  };

  /**
   * Copies `size` bytes of an open file into its entry, with back-pressure. Stops when the entry is destroyed
   * with the pack (its callback then says why). Waits on events, never by racing a promise that stays pending
   * for the whole copy: each race would keep its outcome, and with it every buffer read, alive until the end.
   */
  const copy = async (relPath: string, handle: FileHandle, size: number, sink: EntrySink): Promise<void> => {
    let position = 0;
    let shrank = false;
    while (position < size) {
      if (sink.destroying) return;
      const buffer = Buffer.allocUnsafe(Math.min(READ_BYTES, size - position));
      const { bytesRead } = shrank ? { bytesRead: 0 } : await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) {
        // The header already promised `size` bytes: the rest is zeros, as GNU tar does, and said so.
        if (!shrank) warn(`${relPath} shrank while being archived; its last ${size - position} bytes are stored as zeros`);
        shrank = true;
        buffer.fill(0);
      }
      const piece = bytesRead === 0 || bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead);
      position += piece.length;
      if (!sink.write(piece)) await drainedOrGone(sink);
    }
    sink.end(null);
  };

  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(path.join(dir, rel))).sort();
    for (const name of names) {
      if (stopped) return;
      const relPath = rel ? `${rel}/${name}` : name;
      const full = path.join(dir, relPath);
      const info = await lstat(full);
      const header = { name: relPath, mode: info.mode & 0o7777, mtime: info.mtime };
      if (info.isSymbolicLink()) {
        await entry({ ...header, type: 'symlink', linkname: await readlink(full) });
      } else if (info.isDirectory()) {
        await entry({ ...header, name: `${relPath}/`, type: 'directory' });
        await walk(relPath);
      } else if (info.isFile()) {
        const handle = await open(full, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
        try {
          const opened = await handle.stat();
          if (!opened.isFile()) {
            warn(`${relPath} changed into something other than a file while being archived; skipped`);
            continue;
          }
          await entry({ ...header, size: opened.size }, (sink) => copy(relPath, handle, opened.size, sink));
        } finally {
          await handle.close();
        }
      } else {
        warn(`${relPath} is not a file, folder or link (a FIFO, socket or device); not archived`);
      }
    }
  };
  walk('').then(
    () => {
      if (!stopped) pack.finalize();
    },
    (err: unknown) => pack.destroy(err instanceof Error ? err : new Error(String(err))),
  );
  return gzip;
}

/** Resolves when the entry takes more data, or when it is destroyed (it will take none then). */
function drainedOrGone(sink: EntrySink): Promise<void> {
  if (sink.destroying) return Promise.resolve(); // destroyed while the file was read: no 'close' to come
  return new Promise((resolve) => {
    const settle = () => {
      sink.off('drain', settle);
      sink.off('close', settle);
      resolve();
    };
    sink.on('drain', settle);
    sink.on('close', settle);
  });
}

/**
 * An archive entry that would be written outside the folder being restored into: its name leaves it
 * (`ENTRY_OUTSIDE`: `..` or an absolute path) or its way passes through a link (`ENTRY_THROUGH_LINK`); or
 * one that comes before its folder (`ENTRY_BEFORE_FOLDER`), as the pod-runner refuses it too.
 * packState never makes one, so the archive is not one of ours: a damaged archive, never retried.
 */
export class UnsafeArchiveEntryError extends Error {
  constructor(
    readonly code: 'ENTRY_OUTSIDE' | 'ENTRY_THROUGH_LINK' | 'ENTRY_BEFORE_FOLDER',
    readonly entry: string,
    message: string,
  ) {
    super(message);
    this.name = 'UnsafeArchiveEntryError';
  }
}

/** Entry names must stay inside the folder they are restored into. */
function safeRelative(name: string): string | undefined {
  const normalised = path.posix.normalize(name.replace(/\/+$/, ''));
  if (!normalised || normalised === '.' || path.posix.isAbsolute(normalised) || normalised.split('/').includes('..')) return undefined;
  return normalised;
}

/** Refuses to write through a link: every folder on the way must be a real folder inside `root`. */
async function assertRealParents(root: string, rel: string): Promise<void> {
  const parts = rel.split('/').slice(0, -1);
  let current = root;
  for (const part of parts) {
    current = path.join(current, part);
    const folder = path.relative(root, current);
    const info = await lstat(current).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      throw new UnsafeArchiveEntryError('ENTRY_BEFORE_FOLDER', rel, `archive entry '${rel}' comes before its folder ${folder}`);
    });
    if (!info.isDirectory()) throw new UnsafeArchiveEntryError('ENTRY_THROUGH_LINK', rel, `refusing to restore '${rel}' through ${folder}: not a real folder`);
  }
}

const ZERO_BLOCK = Buffer.alloc(64 * 1024);

/** Writes a file's content, leaving runs of zero blocks as holes, so a sparse file comes back sparse. */
async function writeSparse(handle: FileHandle, content: AsyncIterable<Buffer>): Promise<void> {
  let position = 0;
  for await (const piece of content) {
    for (let at = 0; at < piece.length; at += ZERO_BLOCK.length) {
      const block = piece.subarray(at, Math.min(at + ZERO_BLOCK.length, piece.length));
      if (!(block.length === ZERO_BLOCK.length && block.equals(ZERO_BLOCK))) await handle.write(block, 0, block.length, position);
      position += block.length;
    }
  }
  await handle.truncate(position);
}

/**
 * Whether unpacking failed on the archive itself (not gzip, cut short, not tar) rather than on this host
 * (a full disk, a permission): the former no retry can mend.
 */
export function isDamagedArchive(err: unknown): boolean {
  if (err instanceof UnsafeArchiveEntryError) return true;
  const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
  const message = err instanceof Error ? err.message : '';
  return code.startsWith('Z_') || /^(Invalid tar header|Unexpected end of data|unexpected end of file|incorrect header check)/i.test(message);
}

/** Restores an archive made by packState into an empty folder, writing nothing outside it. */
export async function unpackState(dir: string, archive: AsyncIterable<Buffer>): Promise<void> {
  const extract = tar.extract();
  const feeding = pipeline(Readable.from(archive), zlib.createGunzip({ chunkSize: 256 * 1024 }), extract);
  feeding.catch(() => undefined); // surfaced through the iteration below
  try {
    await restoreEntries(dir, extract);
  } catch (err) {
    // The extractor, destroyed by the pipeline, says only that (STREAM_DESTROYED); what destroyed it (a
    // gzip stream cut short or damaged, the store failing) is the pipeline's error, and that is what counts.
    if (typeof err === 'object' && err !== null && 'code' in err && err.code === 'STREAM_DESTROYED') {
      const cause = await feeding.then(() => undefined, (reason: unknown) => reason);
      if (cause instanceof Error) throw cause;
    }
    throw err;
  }
  await feeding;
}

async function restoreEntries(dir: string, extract: tar.Extract): Promise<void> {
  for await (const entry of extract) {
    const rel = safeRelative(entry.header.name);
    if (!rel) {
      entry.resume();
      throw new UnsafeArchiveEntryError('ENTRY_OUTSIDE', entry.header.name, `archive entry '${entry.header.name}' points outside the state folder`);
    }
    const target = path.join(dir, rel);
    await assertRealParents(dir, rel);
    const mode = (entry.header.mode ?? 0o644) & 0o7777;
    switch (entry.header.type) {
      case 'directory':
        await mkdir(target, { recursive: true, mode });
        entry.resume();
        break;
      case 'file': {
        const handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
        try {
          await writeSparse(handle, entry as AsyncIterable<Buffer>);
        } finally {
          await handle.close();
        }
        break;
      }
      case 'symlink':
        await symlink(entry.header.linkname ?? '', target);
        entry.resume();
        break;
      default:
        entry.resume();
    }
  }
}
