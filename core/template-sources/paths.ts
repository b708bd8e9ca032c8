import { SourceRejectedError, quote } from './errors.js';
import { MAX_PATH_BYTES } from './limits.js';

/**
 * An archive entry's name as a clean relative path ('' for the root itself): `.` components, repeated and
 * trailing slashes dropped. Anything that could land outside the tree is refused rather than repaired:
 * a `..` anywhere (even `a/../b`, which stays inside, is a sign of a crafted archive), a leading `/`, and
 * for zips a Windows drive (`C:/`). Names are otherwise kept byte for byte: a backslash in a tar name is
 * just a character on Linux, where the image is built.
 */
export function normalizeEntryPath(raw: string, opts: { windowsDrives?: boolean } = {}): string {
  if (raw.includes('\0')) throw new SourceRejectedError('SOURCE_BAD_PATH', `path ${quote(raw)} contains a NUL byte`, raw);
  if (Buffer.byteLength(raw) > MAX_PATH_BYTES) {
    throw new SourceRejectedError('SOURCE_BAD_PATH', `path ${quote(raw)} is longer than ${MAX_PATH_BYTES} bytes`, cut(raw));
  }
  if (raw.startsWith('/') || (opts.windowsDrives && /^[A-Za-z]:([/\\]|$)/.test(raw))) {
    throw new SourceRejectedError('SOURCE_ABSOLUTE_PATH', `path ${quote(raw)} is absolute; archive paths must be relative`, raw);
  }
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) {
    throw new SourceRejectedError('SOURCE_PATH_ESCAPES', `path ${quote(raw)} has a '..' component`, raw);
  }
  return parts.join('/');
}

/** A link target is checked for form here; where it leads is checked once the whole tree is known (tree.ts). */
export function checkLinkTarget(entry: string, target: string): void {
  if (target === '') throw new SourceRejectedError('SOURCE_BAD_PATH', `link ${quote(entry)} has an empty target`, entry);
  if (target.includes('\0')) throw new SourceRejectedError('SOURCE_BAD_PATH', `link ${quote(entry)} has a target with a NUL byte`, entry);
  if (Buffer.byteLength(target) > MAX_PATH_BYTES) {
    throw new SourceRejectedError('SOURCE_BAD_PATH', `link ${quote(entry)} has a target longer than ${MAX_PATH_BYTES} bytes`, entry);
  }
  if (target.startsWith('/')) {
    throw new SourceRejectedError('SOURCE_LINK_ESCAPES', `link ${quote(entry)} points to the absolute path ${quote(target)}; only relative links inside the source are allowed`, entry);
  }
}

/** Entry names in errors are cut to a readable length (an over-long name is the error). */
export function cut(raw: string): string {
  return raw.length > MAX_PATH_BYTES ? `${raw.slice(0, MAX_PATH_BYTES)}…` : raw;
}
