/** Bounds on what a template source may hold. Every field is optional; the defaults apply to what is left out. */
export interface SourceLimits {
  /** Total uncompressed bytes of regular files, counted while decompressing (default 200 MiB). */
  maxBytes?: number;
  /** Entries in the tree: files, folders (including folders only implied by a path) and links (default 10 000). */
  maxFiles?: number;
  /** The compressed upload itself (default 50 MiB); not used for folders. */
  maxUploadBytes?: number;
}

export const DEFAULT_SOURCE_LIMITS: Readonly<Required<SourceLimits>> = Object.freeze({
  maxBytes: 200 * 1024 * 1024,
  maxFiles: 10_000,
  maxUploadBytes: 50 * 1024 * 1024,
});

/** Longest path inside a source, in UTF-8 bytes; also the longest link target. */
export const MAX_PATH_BYTES = 1024;

export function resolveLimits(limits: SourceLimits | undefined): Required<SourceLimits> {
  const out = { ...DEFAULT_SOURCE_LIMITS };
  for (const key of Object.keys(out) as (keyof SourceLimits)[]) {
    const value = limits?.[key];
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`limits.${key} must be a non-negative integer, not ${value}`);
    out[key] = value;
  }
  return out;
}
