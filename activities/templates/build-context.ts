/**
 * The build context of a template image, made as a stream: the Dockerfile, and under `template/` every
 * entry of the template's source archive (tar + gzip) with its mode, folders and links as they are.
 * Nothing is extracted to disk: entries go from the gunzipped source straight into the context tar.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tar, { type Header as SourceHeader } from 'tar-stream';
import { CONTEXT_TEMPLATE_DIR } from './dockerfile.js';

/** Entries the context adds itself get a fixed time, so the same input gives the same context. */
const FIXED_MTIME = new Date(0);
/**
 * set-user-ID and set-group-ID bits are dropped: a template could otherwise ship a binary that makes
 * whoever runs it root inside the container, whatever user its type's base image runs templates as.
 */
const MODE_MASK = 0o1777;

/** The source archive is not a tar + gzip of plain entries inside the template folder. */
export class InvalidSourceError extends Error {
  override name = 'InvalidSourceError';
}

/** `./a/b/` → `a/b`; '' for the archive's root; undefined when the name leaves the folder. */
function relativeName(name: string): string | undefined {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (name.startsWith('/') || parts.includes('..')) return undefined;
  return parts.join('/');
}

type Header = Partial<SourceHeader> & { name: string };

function contextHeader(source: SourceHeader): Header {
  const rel = relativeName(source.name);
  if (rel === undefined) throw new InvalidSourceError(`source archive entry '${source.name}' is outside the template folder`);
  const name = rel === '' ? CONTEXT_TEMPLATE_DIR : `${CONTEXT_TEMPLATE_DIR}/${rel}`;
  // Owners are not kept: the Dockerfile's COPY --chown makes everything root's.
  const common = { mode: (source.mode ?? 0o644) & MODE_MASK, mtime: source.mtime ?? FIXED_MTIME, uid: 0, gid: 0 };
  switch (source.type ?? 'file') {
    case 'file':
    case 'contiguous-file':
      if (rel === '') throw new InvalidSourceError('source archive has a file at its root');
      return { ...common, name, type: 'file', size: source.size ?? 0 };
    case 'directory':
      return { ...common, name: `${name}/`, type: 'directory' };
    case 'symlink':
      // The target is kept as written: relative or absolute, it is resolved inside the image.
      return { ...common, name, type: 'symlink', linkname: source.linkname ?? '' };
    case 'link': {
      const target = relativeName(source.linkname ?? '');
      if (!target) throw new InvalidSourceError(`source archive entry '${source.name}' is a hard link to '${source.linkname}', outside the template folder`);
      return { ...common, name, type: 'link', linkname: `${CONTEXT_TEMPLATE_DIR}/${target}` };
    }
    default:
      throw new InvalidSourceError(`source archive entry '${source.name}' is a ${source.type}: only files, folders and links may be in a template`);
  }
}

/**
 * The context as a byte stream. A bad source archive (not gzip, not tar, an entry outside the folder or
 * of another kind) makes the stream fail with an InvalidSourceError (a broken gzip or tar with their own).
 * `onFile` hears each file's size as it goes in.
 */
export function templateBuildContext(dockerfile: string, source: Buffer, onFile?: (bytes: number) => void): Readable {
  const pack = tar.pack();
  /** Resolves once the entry is in the tar: a body is piped in, with the tar's back-pressure. */
  const write = (header: Header, body?: NodeJS.ReadableStream) =>
    new Promise<void>((resolve, reject) => {
      const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
      // A reader that goes away (the engine refused the build) destroys the pack and so this entry; the
      // callback above reports it, and this keeps the entry's 'error' event from being thrown out of the process.
      sink.on('error', () => undefined);
      body?.on('error', reject).pipe(sink);
    });
  const folder = { name: `${CONTEXT_TEMPLATE_DIR}/`, type: 'directory', mode: 0o755, mtime: FIXED_MTIME } as const;
  const fill = async () => {
    pack.entry({ name: 'Dockerfile', mode: 0o644, mtime: FIXED_MTIME }, dockerfile);
    const extract = tar.extract();
    const feeding = pipeline(Readable.from([source]), zlib.createGunzip(), extract);
    feeding.catch(() => undefined); // surfaced through the iteration below
    let first = true;
    for await (const entry of extract) {
      const header = contextHeader(entry.header);
      // COPY needs the folder even for an empty template; the archive's own root entry, if first, is it.
      if (first && header.name !== folder.name) await write(folder);
      first = false;
      if (header.type === 'file') {
        onFile?.(header.size ?? 0);
        await write(header, entry as unknown as NodeJS.ReadableStream);
      } else {
        entry.resume();
        await write(header);
      }
    }
    await feeding;
    if (first) await write(folder);
    pack.finalize();
  };
  fill().catch((err: unknown) => pack.destroy(err instanceof Error ? err : new Error(String(err))));
  return Readable.from(pack, { objectMode: false });
}
