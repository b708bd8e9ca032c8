import { spawn } from 'node:child_process';
import { lstat, mkdir, mkdtemp, opendir, rm } from 'node:fs/promises';
import path from 'node:path';
import {
  DEFAULT_SOURCE_LIMITS,
  SourceRejectedError,
  normalizeDirectory,
  parseGitSource,
  redact,
  type GitProtocol,
  type GitSource,
  type NormalizedSource,
} from '../../core/template-sources/index.js';

export interface GitFetchOptions {
  /** Let `file://` URLs and absolute paths through (tests, single-machine installs); off by default. */
  allowFileUrls?: boolean;
  /** For everything git does, together (default 120 s). */
  timeoutMs?: number;
  /** Cap on the checkout's files and, separately, on its .git folder, watched while git runs (default 200 MiB). */
  maxBytes?: number;
  /** Cap on the checkout's entries (default 10 000). */
  maxFiles?: number;
  /** An existing folder; the clone goes into a fresh folder inside it, always removed afterwards. */
  workDir: string;
  signal?: AbortSignal;
  /** Git's progress (its stderr), a line at a time. */
  onProgress?: (line: string) => void;
  /** How often the checkout's size is measured while git runs (default 500 ms). */
  pollMs?: number;
}

export type FetchedGitSource = NormalizedSource & { commit: string };

const DEFAULT_TIMEOUT_MS = 120_000;
const DEFAULT_POLL_MS = 500;
/** Git's stderr lines kept for an error message. */
const ERROR_LINES = 12;

/**
 * Clones a template's git source (one commit, no history, no tags) and normalizes the chosen folder.
 * The URL, ref and subdir are checked first (parseGitSource: no `ext::`, no option-looking values), and
 * git runs as locked down as it can be: only the URL's own protocol allowed (for redirects too), no
 * system or user config (HOME is an empty folder), no hooks or templates, no prompts. It runs in its own
 * process group, killed whole on timeout, abort, or when the checkout grows past the caps.
 *
 * Throws SourceRejectedError (GIT_* codes, or SOURCE_* from normalizing); on abort, the signal's reason.
 */
export async function fetchGitSource(source: GitSource, opts: GitFetchOptions): Promise<FetchedGitSource> {
  const checked = parseGitSource(source, { allowFileUrls: opts.allowFileUrls ?? false });
  opts.signal?.throwIfAborted();
  const maxBytes = opts.maxBytes ?? DEFAULT_SOURCE_LIMITS.maxBytes;
  const maxFiles = opts.maxFiles ?? DEFAULT_SOURCE_LIMITS.maxFiles;
  const scratch = await mkdtemp(path.join(opts.workDir, 'git-'));
  try {
    const home = path.join(scratch, 'home');
    const checkout = path.join(scratch, 'checkout');
    await mkdir(home);
    const git = new GitRunner({
      env: gitEnv(home, checked.protocol),
      config: gitConfig(checked.protocol),
      deadline: Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS),
      timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      watch: { dir: checkout, maxBytes, maxFiles, pollMs: opts.pollMs ?? DEFAULT_POLL_MS },
      url: checked.url,
      ref: checked.ref.value,
      scratch,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    if (checked.ref.kind === 'name') {
      // `--` before the URL; the ref cannot start with '-' (checked), so neither is read as an option.
      await git.run(scratch, ['clone', '--template=', '--depth', '1', '--single-branch', '--no-tags', '--progress', '--branch', checked.ref.value, '--', checked.url, checkout]);
    } else {
      // `clone --branch` takes names only: a commit is fetched by id into an empty repository.
      await mkdir(checkout);
      await git.run(checkout, ['init', '--quiet', '--template=']);
      await git.run(checkout, ['fetch', '--depth', '1', '--no-tags', '--progress', '--', checked.url, checked.ref.value]);
      await git.run(checkout, ['checkout', '--quiet', 'FETCH_HEAD']);
    }
    const commit = (await git.run(checkout, ['rev-parse', '--verify', 'HEAD^{commit}'])).trim();
    if (checked.ref.kind === 'commit' && commit !== checked.ref.value) {
      throw new SourceRejectedError('GIT_CLONE_FAILED', `asked for commit ${checked.ref.value}, git checked out ${commit}`);
    }
    const dir = await subdirOf(checkout, checked.subdir);
    opts.signal?.throwIfAborted();
    const normalized = await normalizeDirectory(dir, { maxBytes, maxFiles });
    opts.signal?.throwIfAborted();
    return { ...normalized, commit };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** `-c` settings for every git command: nothing from the repository or the machine can run code. */
function gitConfig(protocol: GitProtocol): string[] {
  const settings = [
    'protocol.allow=never',
    `protocol.${protocol}.allow=always`,
    'core.symlinks=true',
    'core.hooksPath=/dev/null',
    'core.fsmonitor=false',
    'core.protectNTFS=true',
    'core.protectHFS=true',
    'credential.helper=',
    'advice.detachedHead=false',
    'init.defaultBranch=main',
  ];
  return settings.flatMap((s) => ['-c', s]);
}

/** A minimal environment: nothing of the worker's own env reaches git but the path and proxy/ssh settings. */
function gitEnv(home: string, protocol: GitProtocol): NodeJS.ProcessEnv {
  const passed = ['PATH', 'http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'SSH_AUTH_SOCK', 'GIT_SSH_COMMAND'];
  const env: NodeJS.ProcessEnv = {};
  for (const name of passed) if (process.env[name] !== undefined) env[name] = process.env[name];
  return {
    ...env,
    HOME: home,
    XDG_CONFIG_HOME: home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_ALLOW_PROTOCOL: protocol,
    GIT_SSH_COMMAND: env.GIT_SSH_COMMAND ?? 'ssh -o BatchMode=yes',
    LC_ALL: 'C', // git's messages in English: the ref-not-found check reads them
  };
}

/** The subdir inside the checkout: it must exist and be a folder, with no link on the way to it. */
async function subdirOf(checkout: string, subdir: string): Promise<string> {
  let current = checkout;
  for (const part of subdir ? subdir.split('/') : []) {
    current = path.join(current, part);
    const shown = path.relative(checkout, current);
    const info = await lstat(current).catch(() => undefined);
    if (!info) throw new SourceRejectedError('GIT_SUBDIR_MISSING', `the repository has no folder '${shown}'`, subdir);
    if (info.isSymbolicLink()) throw new SourceRejectedError('GIT_SUBDIR_REFUSED', `'${shown}' is a symbolic link in the repository; name the folder it points to instead`, subdir);
    if (!info.isDirectory()) throw new SourceRejectedError('GIT_SUBDIR_MISSING', `'${shown}' is not a folder in the repository`, subdir);
  }
  return current;
}

interface RunnerOptions {
  env: NodeJS.ProcessEnv;
  config: string[];
  deadline: number;
  timeoutMs: number;
  watch: { dir: string; maxBytes: number; maxFiles: number; pollMs: number };
  url: string;
  ref: string;
  /** The worker's own temp folder: not shown in progress lines ("Cloning into '<scratch>/checkout'"). */
  scratch: string;
  signal?: AbortSignal;
  onProgress?: (line: string) => void;
}

type Stop = { why: 'timeout' } | { why: 'aborted' } | { why: 'too-large'; detail: string };

/** Runs git commands one after another under one deadline, one abort signal and one size watch. */
class GitRunner {
  constructor(private readonly opts: RunnerOptions) {}

  /** Runs `git <config> <args>` in `cwd` and returns its stdout; throws SourceRejectedError when stopped or failed. */
  async run(cwd: string, args: string[]): Promise<string> {
    const { opts } = this;
    opts.signal?.throwIfAborted();
    if (Date.now() >= opts.deadline) throw this.timeout();
    const child = spawn('git', [...opts.config, ...args], { cwd, env: opts.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stop: Stop | undefined;
    // The whole process group: git's helpers (remote-https, index-pack, ssh, upload-pack for file://) too.
    const kill = (why: Stop) => {
      stop ??= why;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => kill({ why: 'timeout' }), Math.max(0, opts.deadline - Date.now()));
    const onAbort = () => kill({ why: 'aborted' });
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let measuring = false;
    const poll = setInterval(() => {
      if (measuring || stop) return;
      measuring = true;
      overLimits(opts.watch)
        .then((over) => over && kill({ why: 'too-large', detail: over }))
        .catch(() => undefined)
        .finally(() => (measuring = false));
    }, opts.watch.pollMs);

    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    child.stdout.on('data', (part: Buffer) => {
      if ((stdoutBytes += part.length) <= 1024 * 1024) stdout.push(part);
    });
    const lines: string[] = [];
    let partial = '';
    const line = (text: string) => {
      const shown = redactIn(text.trimEnd(), opts.url).split(opts.scratch + path.sep).join('');
      if (!shown) return;
      lines.push(shown);
      if (lines.length > ERROR_LINES) lines.shift();
      opts.onProgress?.(shown);
    };
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      // Progress meters rewrite their line with '\r'; each state is a line of its own here.
      const pieces = (partial + text).split(/\r\n|\r|\n/);
      partial = pieces.pop() ?? '';
      if (partial.length > 4096) partial = partial.slice(-4096);
      pieces.forEach(line);
    });

    try {
      const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code, signal) => {
          // A helper that left the group could keep the pipes open: do not wait on them past a moment.
          const late = setTimeout(() => {
            child.stdout.destroy();
            child.stderr.destroy();
          }, 1000);
          child.once('close', () => {
            clearTimeout(late);
            resolve({ code, signal });
          });
        });
      }).catch((err: unknown) => {
        throw new SourceRejectedError('GIT_CLONE_FAILED', `cannot run git: ${err instanceof Error ? err.message : String(err)}`);
      });
      line(partial);
      // A size check after every step, too: a fast clone can finish between two polls.
      if (!stop && exit.code === 0) {
        const over = await overLimits(opts.watch);
        if (over) throw new SourceRejectedError('GIT_TOO_LARGE', `the repository is too large: ${over}`);
      }
      if (stop?.why === 'aborted') opts.signal?.throwIfAborted();
      if (stop?.why === 'timeout') throw this.timeout();
      if (stop?.why === 'too-large') throw new SourceRejectedError('GIT_TOO_LARGE', `the repository is too large: ${stop.detail}; git was stopped`);
      if (exit.code !== 0) {
        const said = lines.join('\n');
        const notFound = /Remote branch .* not found|couldn't find remote ref|not our ref|no such remote ref|unadvertised object/i.test(said);
        if (notFound) throw new SourceRejectedError('GIT_REF_NOT_FOUND', `the repository has no branch, tag or commit '${opts.ref}':\n${said}`);
        throw new SourceRejectedError('GIT_CLONE_FAILED', `git ${args[0]} failed (exit ${exit.code ?? exit.signal}):\n${said}`);
      }
      return Buffer.concat(stdout).toString('utf8');
    } finally {
      clearTimeout(timer);
      clearInterval(poll);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  private timeout(): SourceRejectedError {
    return new SourceRejectedError('GIT_TIMEOUT', `git took longer than ${Math.round(this.opts.timeoutMs / 1000)} s; it was stopped`);
  }
}

/**
 * Why the checkout is over its caps, or undefined: the working files (bytes and entries) and the .git
 * folder (the downloaded pack) are measured apart, each against maxBytes, so a source just under the cap
 * is not refused because its history doubles it. Stops walking as soon as a cap is passed.
 */
async function overLimits(watch: { dir: string; maxBytes: number; maxFiles: number }): Promise<string | undefined> {
  let files = 0;
  let fileBytes = 0;
  let gitBytes = 0;
  const walk = async (dir: string, inGit: boolean): Promise<string | undefined> => {
    let handle;
    try {
      handle = await opendir(dir);
    } catch {
      return undefined; // not there yet, or removed by git meanwhile
    }
    for await (const entry of handle) {
      const full = path.join(dir, entry.name);
      const isGit = inGit || (dir === watch.dir && entry.name === '.git');
      if (!isGit && ++files > watch.maxFiles) return `more than ${watch.maxFiles} files`;
      if (entry.isDirectory()) {
        const over = await walk(full, isGit);
        if (over) return over;
      } else if (entry.isFile()) {
        const size = (await lstat(full).catch(() => undefined))?.size ?? 0;
        if (isGit) gitBytes += size;
        else fileBytes += size;
        if (gitBytes > watch.maxBytes) return `its .git folder passed ${watch.maxBytes} bytes`;
        if (fileBytes > watch.maxBytes) return `its files passed ${watch.maxBytes} bytes`;
      }
    }
    return undefined;
  };
  return walk(watch.dir, false);
}

/** Git usually hides a URL's password itself; this makes sure of it in what is shown. */
function redactIn(text: string, url: string): string {
  const shown = redact(url);
  return shown === url ? text : text.split(url).join(shown);
}
