/**
 * Why a template source was refused. Codes are stable and machine-readable (the API returns them as they
 * are); messages are for people and safe to show, since they only quote the source's own paths and git's
 * own output.
 */
export const SOURCE_ERROR_CODES = [
  // Archive and folder content (normalizeUpload, normalizeDirectory).
  'SOURCE_PATH_ESCAPES', // a `..` component
  'SOURCE_ABSOLUTE_PATH', // `/x`, or `C:/x` in a zip
  'SOURCE_BAD_PATH', // empty, NUL, over 1024 bytes; or a link with an empty or over-long target
  'SOURCE_LINK_ESCAPES', // a symbolic link resolving outside the tree (absolute, or through `..`, or through other links)
  'SOURCE_LINK_LOOP', // a link that cannot be resolved: a loop, or more than 40 links deep
  'SOURCE_HARDLINK', // a tar hard link
  'SOURCE_SPECIAL_FILE', // device, FIFO, socket
  'SOURCE_UNSUPPORTED_ENTRY', // sparse or unknown tar entries, encrypted or oddly compressed zip entries
  'SOURCE_DUPLICATE_PATH', // a path given twice, or both a file/link and the folder of another entry
  'SOURCE_TOO_LARGE', // uncompressed content over maxBytes
  'SOURCE_TOO_MANY_FILES', // more than maxFiles entries
  'SOURCE_UPLOAD_TOO_LARGE', // the compressed upload over maxUploadBytes
  'SOURCE_BAD_ARCHIVE', // not a zip/tgz, corrupt, truncated
  'SOURCE_EMPTY', // no file or link at all
  // Git sources (checkGitSource, fetchGitSource).
  'GIT_URL_REFUSED',
  'GIT_REF_REFUSED',
  'GIT_SUBDIR_REFUSED', // the subdir is not a plain relative path, or is reached through a link
  'GIT_SUBDIR_MISSING',
  'GIT_REF_NOT_FOUND',
  'GIT_CLONE_FAILED',
  'GIT_TIMEOUT',
  'GIT_TOO_LARGE',
] as const;

export type SourceErrorCode = (typeof SOURCE_ERROR_CODES)[number];

export class SourceRejectedError extends Error {
  override readonly name = 'SourceRejectedError';
  constructor(
    readonly code: SourceErrorCode,
    message: string,
    /** The offending path inside the source (as the archive spelled it), when there is one. */
    readonly entry?: string,
  ) {
    super(message);
  }
}

export function isSourceRejected(err: unknown): err is SourceRejectedError {
  return err instanceof SourceRejectedError;
}

/** A path quoted for a message: control characters escaped, long paths cut, so a message stays one readable line. */
export function quote(value: string, max = 200): string {
  const cut = value.length > max ? `${value.slice(0, max)}…` : value;
  return JSON.stringify(cut);
}
