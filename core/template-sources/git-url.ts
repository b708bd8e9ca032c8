import { SourceRejectedError, quote } from './errors.js';
import { MAX_PATH_BYTES } from './limits.js';

/**
 * What a template's git source may name, checked before anything is cloned (the API checks it when the
 * source is submitted, the build activity again before cloning). Git's URL and option syntax has many
 * ways to run commands (`ext::`, `--upload-pack=`, `-oProxyCommand`): only plain network URLs pass, and
 * nothing may start with `-` where git could read it as an option.
 */
export type GitProtocol = 'https' | 'http' | 'git' | 'ssh' | 'file';

export interface GitSource {
  url: string;
  ref: string;
  subdir?: string;
}

export interface CheckedGitSource {
  url: string;
  /** A branch or tag name, or a full commit id (fetched by id; `git clone --branch` cannot take one). */
  ref: { kind: 'name' | 'commit'; value: string };
  /** Normalized: no `.` components, no trailing slash; '' for the repository's root. */
  subdir: string;
  /** The one protocol git is allowed to use for this URL (and its redirects). */
  protocol: GitProtocol;
}

const MAX_URL_LENGTH = 2048;
const MAX_REF_BYTES = 255;
/** ASCII control characters: git itself refuses them in ref names, and no URL or path needs them. */
function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}
const NETWORK_SCHEMES = new Set<GitProtocol>(['https', 'http', 'git', 'ssh']);

function refuseUrl(url: string, why: string): never {
  throw new SourceRejectedError('GIT_URL_REFUSED', `git URL ${quote(redact(url))} is not allowed: ${why}`);
}

/** Hides a password in `https://user:password@host/…` before a URL is shown. */
export function redact(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/@]*@/i, '$1:***@');
}

function parseGitUrl(url: string, opts: { allowFileUrls?: boolean }): GitProtocol {
  if (typeof url !== 'string' || url === '') refuseUrl(String(url), 'it is empty');
  if (url.length > MAX_URL_LENGTH) refuseUrl(url.slice(0, 100), `it is longer than ${MAX_URL_LENGTH} characters`);
  if (hasControl(url)) refuseUrl(url, 'it contains control characters');
  if (/\s/.test(url)) refuseUrl(url, 'it contains spaces');
  if (url.startsWith('-')) refuseUrl(url, "it starts with '-'");
  const helper = /^([A-Za-z][A-Za-z0-9+.-]*)::/.exec(url);
  if (helper) refuseUrl(url, `'${helper[1]}::' runs a git remote helper; use an https://, http://, git:// or ssh:// URL`);

  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(url)?.[1];
  if (scheme !== undefined) {
    if (scheme === 'file') {
      if (!opts.allowFileUrls) refuseUrl(url, 'file:// URLs are not allowed here');
      return 'file';
    }
    if (!NETWORK_SCHEMES.has(scheme as GitProtocol)) refuseUrl(url, `the scheme '${scheme}' is not one of https, http, git, ssh`);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      refuseUrl(url, 'it is not a valid URL');
    }
    if (parsed.hostname === '') refuseUrl(url, 'it has no host');
    if (parsed.hostname.startsWith('-') || decodeURIComponent(parsed.username).startsWith('-')) refuseUrl(url, "its host or user starts with '-'");
    return scheme as GitProtocol;
  }

  // Git reads `[user@]host:path` as ssh when the first ':' comes before any '/'.
  const colon = url.indexOf(':');
  const slash = url.indexOf('/');
  if (colon > 0 && (slash === -1 || colon < slash)) {
    const userHost = url.slice(0, colon);
    const repoPath = url.slice(colon + 1);
    const at = userHost.lastIndexOf('@');
    const user = at === -1 ? undefined : userHost.slice(0, at);
    const host = userHost.slice(at + 1);
    if (user !== undefined && !/^[A-Za-z0-9._~+][A-Za-z0-9._~+-]*$/.test(user)) refuseUrl(url, 'the user name is not a plain name');
    if (!/^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(host) && !/^\[[0-9A-Fa-f:.]+\]$/.test(host)) refuseUrl(url, 'the host is not a plain host name');
    if (repoPath === '' || repoPath.startsWith('-')) refuseUrl(url, "the path is empty or starts with '-'");
    return 'ssh';
  }

  if (!opts.allowFileUrls) refuseUrl(url, 'local paths are not allowed; use an https://, http://, git:// or ssh:// URL');
  if (!url.startsWith('/')) refuseUrl(url, 'a local path must be absolute');
  return 'file';
}

/**
 * A branch or tag name by `git check-ref-format --allow-onelevel`'s rules, or a full commit id (40 hex
 * digits, or 64 for SHA-256 repositories).
 */
function parseGitRef(ref: string): { kind: 'name' | 'commit'; value: string } {
  const refuse = (why: string): never => {
    throw new SourceRejectedError('GIT_REF_REFUSED', `git ref ${quote(String(ref))} is not allowed: ${why}`);
  };
  if (typeof ref !== 'string' || ref === '') refuse('it is empty');
  if (/^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$/.test(ref)) return { kind: 'commit', value: ref.toLowerCase() };
  if (Buffer.byteLength(ref) > MAX_REF_BYTES) refuse(`it is longer than ${MAX_REF_BYTES} bytes`);
  if (ref.startsWith('-')) refuse("it starts with '-'");
  if (hasControl(ref)) refuse('it contains control characters');
  if (/\s/.test(ref)) refuse('it contains spaces');
  const bad = /[~^:?*[\\]/.exec(ref);
  if (bad) refuse(`it contains '${bad[0]}'`);
  if (ref.includes('..')) refuse("it contains '..'");
  if (ref.includes('@{') || ref === '@') refuse("it is '@' or contains '@{'");
  if (ref.startsWith('/') || ref.endsWith('/') || ref.includes('//')) refuse("it starts or ends with '/' or has an empty component");
  if (ref.endsWith('.')) refuse("it ends with '.'");
  for (const part of ref.split('/')) {
    if (part.startsWith('.') || part.endsWith('.lock')) refuse(`its component '${part}' starts with '.' or ends with '.lock'`);
  }
  return { kind: 'name', value: ref };
}

/** A folder inside the repository: relative, no `..`. Returns it normalized ('' for the root). */
function parseGitSubdir(subdir: string | undefined): string {
  if (subdir === undefined) return '';
  const refuse = (why: string): never => {
    throw new SourceRejectedError('GIT_SUBDIR_REFUSED', `subdirectory ${quote(String(subdir))} is not allowed: ${why}`, String(subdir));
  };
  if (typeof subdir !== 'string') refuse('it is not a string');
  if (Buffer.byteLength(subdir) > MAX_PATH_BYTES) refuse(`it is longer than ${MAX_PATH_BYTES} bytes`);
  if (hasControl(subdir)) refuse('it contains control characters');
  if (subdir.startsWith('/')) refuse('it must be relative to the repository');
  const parts = subdir.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) refuse("it has a '..' component");
  if (parts[0] === '.git') refuse("it is inside '.git'");
  return parts.join('/');
}

/** Refuses a git source, all three parts checked and the first refusal thrown; or returns it normalized. */
export function parseGitSource(source: GitSource, opts: { allowFileUrls?: boolean } = {}): CheckedGitSource {
  const protocol = parseGitUrl(source.url, opts);
  return { url: source.url, ref: parseGitRef(source.ref), subdir: parseGitSubdir(source.subdir), protocol };
}

/** The refusal of a git source (URL, ref, subdir), or undefined when it may be cloned. For the API. */
export function checkGitSource(source: GitSource, opts: { allowFileUrls?: boolean } = {}): SourceRejectedError | undefined {
  return refusalOf(() => parseGitSource(source, opts));
}

/** The refusal of a git URL alone, or undefined when it is allowed. */
export function checkGitUrl(url: string, opts: { allowFileUrls?: boolean } = {}): SourceRejectedError | undefined {
  return refusalOf(() => parseGitUrl(url, opts));
}

function refusalOf(check: () => unknown): SourceRejectedError | undefined {
  try {
    check();
    return undefined;
  } catch (err) {
    if (err instanceof SourceRejectedError) return err;
    throw err;
  }
}
