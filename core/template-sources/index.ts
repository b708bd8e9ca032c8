/**
 * Template build sources: an uploaded .zip/.tgz or a git checkout turned into one normalized, validated
 * tar.gz, or refused with a SourceRejectedError saying why. Nothing here stores anything or talks to
 * Temporal; the API uses it to check uploads and git sources, the build activity to fetch them.
 *
 * Paths are kept exactly as given: a single top-level folder wrapping everything (GitHub tarballs, most
 * zips made from a folder) is NOT stripped, so `project/Dockerfile` stays `project/Dockerfile`.
 */
import { writeArchive, type NormalizedSource } from './archive.js';
import { readDirectory } from './directory.js';
import { SourceRejectedError } from './errors.js';
import { resolveLimits, type SourceLimits } from './limits.js';
import { readTgz } from './tgz.js';
import { SourceTree } from './tree.js';
import { readZip } from './zip.js';

export type { NormalizedSource } from './archive.js';
export { SOURCE_ERROR_CODES, SourceRejectedError, isSourceRejected, type SourceErrorCode } from './errors.js';
export { DEFAULT_SOURCE_LIMITS, MAX_PATH_BYTES, type SourceLimits } from './limits.js';
export { checkGitSource, checkGitUrl, parseGitSource, redact, type CheckedGitSource, type GitProtocol, type GitSource } from './git-url.js';

export type UploadFormat = 'zip' | 'tgz';

/** An uploaded archive, normalized. Every byte is counted while it is inflated; nothing is written to disk. */
export async function normalizeUpload(format: UploadFormat, data: Buffer, limits?: SourceLimits): Promise<NormalizedSource> {
  const resolved = resolveLimits(limits);
  if (format !== 'zip' && format !== 'tgz') throw new TypeError(`unknown archive format '${String(format)}'`);
  if (data.length > resolved.maxUploadBytes) {
    throw new SourceRejectedError('SOURCE_UPLOAD_TOO_LARGE', `the upload is ${data.length} bytes, more than ${resolved.maxUploadBytes}`);
  }
  if (data.length === 0) throw new SourceRejectedError('SOURCE_BAD_ARCHIVE', 'the upload is empty (0 bytes)');
  const tree = new SourceTree(resolved);
  await (format === 'zip' ? readZip(data, tree, resolved) : readTgz(data, tree, resolved));
  return finish(tree);
}

/**
 * A folder on disk (a git checkout), normalized: links are never followed out (they are kept only if
 * they resolve inside `dir`), and the top-level `.git` is left out. `maxUploadBytes` does not apply.
 */
export async function normalizeDirectory(dir: string, limits?: SourceLimits): Promise<NormalizedSource> {
  const tree = new SourceTree(resolveLimits(limits));
  await readDirectory(dir, tree);
  return finish(tree);
}

async function finish(tree: SourceTree): Promise<NormalizedSource> {
  if (tree.files === 0) throw new SourceRejectedError('SOURCE_EMPTY', 'the source has no files (folders alone do not count)');
  tree.checkLinks();
  return writeArchive(tree);
}
