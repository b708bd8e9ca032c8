import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { fetchGitSource, type FetchedGitSource, type GitFetchOptions } from '../../activities/templates/git-source.js';
import { SourceRejectedError, type SourceErrorCode } from '../../core/template-sources/index.js';
import { freePort, isPortInUse } from '../../infra/dev/ports.js';

const run = promisify(execFile);
const PWNED = ['/tmp/pwned', '/tmp/x'];

/** The files of a normalized archive: name → content, or '-> target' for links. */
async function filesOf(archive: Buffer): Promise<Record<string, string>> {
  const extract = tar.extract();
  const out: Record<string, string> = {};
  const done = (async () => {
    for await (const entry of extract) {
      const parts: Buffer[] = [];
      for await (const p of entry as unknown as AsyncIterable<Buffer>) parts.push(p);
      const h = entry.header;
      if (h.type === 'file') out[h.name] = `${Buffer.concat(parts).toString()}${h.mode === 0o755 ? ' (x)' : ''}`;
      if (h.type === 'symlink') out[h.name] = `-> ${h.linkname}`;
    }
  })();
  extract.end(zlib.gunzipSync(archive));
  await done;
  return out;
}

describe('git sources (fetchGitSource)', () => {
  let root: string;
  let workDir: string;
  let daemon: ChildProcess;
  let hang: net.Server;
  let port: number;
  let hangPort: number;
  const hangSockets = new Set<net.Socket>();
  const commits: Record<string, string> = {};
  const url = (repo: string) => `git://127.0.0.1:${port}/${repo}`;
  const fetch = (source: { url: string; ref: string; subdir?: string }, opts: Partial<GitFetchOptions> = {}): Promise<FetchedGitSource> =>
    fetchGitSource(source, { workDir, timeoutMs: 30_000, ...opts });

  async function refused(promise: Promise<unknown>, code: SourceErrorCode): Promise<SourceRejectedError> {
    try {
      await promise;
    } catch (err) {
      assert.ok(err instanceof SourceRejectedError, `expected a SourceRejectedError, got ${String(err)}`);
      assert.equal(err.code, code, err.message);
      return err;
    }
    assert.fail(`expected ${code}, got a source`);
  }

  /** Commits `files` (content, or { link }) on `branch` of the bare repository `repo`, replacing the tree. */
  async function commit(repo: string, branch: string, files: Record<string, string | { link: string } | { exec: string }>, opts: { tag?: string; compression?: 0 } = {}): Promise<string> {
    const work = await mkdtemp(path.join(root, 'work-'));
    const git = (...args: string[]) => run('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.com', ...(opts.compression === 0 ? ['-c', 'core.compression=0', '-c', 'pack.compression=0'] : []), ...args], { cwd: work, maxBuffer: 1 << 24 });
    await git('init', '-q', '--initial-branch', branch);
    for (const [name, content] of Object.entries(files)) {
      const file = path.join(work, name);
      await mkdir(path.dirname(file), { recursive: true });
      if (typeof content === 'string') await writeFile(file, content);
      else if ('link' in content) await symlink(content.link, file);
      else await writeFile(file, content.exec, { mode: 0o755 });
    }
    await git('add', '-A');
    await git('commit', '-qm', `${branch}: ${Object.keys(files).join(' ')}`);
    const bare = path.join(root, 'srv', repo);
    if (!existsSync(bare)) await run('git', ['init', '-q', '--bare', '--initial-branch=main', bare]);
    await git('push', '-q', '--force', bare, `HEAD:refs/heads/${branch}`);
    if (opts.tag) await git('push', '-q', bare, `HEAD:refs/tags/${opts.tag}`);
    const sha = (await git('rev-parse', 'HEAD')).stdout.trim();
    await rm(work, { recursive: true, force: true });
    return sha;
  }

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'gg-git-'));
    workDir = path.join(root, 'work');
    await mkdir(workDir);
    await mkdir(path.join(root, 'srv'));
    commits.v1 = await commit(
      'repo.git',
      'main',
      { README: 'version 1\n', 'app/Dockerfile': 'FROM scratch\n', 'app/run.sh': { exec: '#!/bin/sh\n' }, 'app/run': { link: 'run.sh' } },
      { tag: 'v1' },
    );
    commits.main = await commit('repo.git', 'main', {
      README: 'version 2\n',
      'app/Dockerfile': 'FROM scratch\n',
      'app/run.sh': { exec: '#!/bin/sh\n' },
      'app/run': { link: 'run.sh' },
      'app/shared': { link: '../README' }, // fine for the whole repository, out of bounds for subdir app
      linked: { link: 'app' },
      'notes.txt': 'a file, not a folder',
    });
    commits.other = await commit('repo.git', 'other', { 'other.txt': 'the other branch\n' });
    commits.evil = await commit('repo.git', 'evil', { 'passwd': { link: '/etc/passwd' }, 'up': { link: '../../..' } });
    // Incompressible, and pushed uncompressed: big enough that the clone takes a while even over loopback.
    commits.big = await commit('big.git', 'main', { blob: randomBytes(48 * 1024 * 1024).toString('base64') }, { compression: 0 });

    port = await freePort();
    daemon = spawn('git', ['daemon', '--reuseaddr', `--base-path=${path.join(root, 'srv')}`, '--export-all', `--port=${port}`, '--listen=127.0.0.1', path.join(root, 'srv')], {
      stdio: 'ignore',
      detached: true,
    });
    for (let i = 0; !(await isPortInUse(port)); i++) {
      if (i > 100) throw new Error('git daemon did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    // A server that accepts connections and never says a word.
    hangPort = await freePort();
    hang = net.createServer((socket) => hangSockets.add(socket));
    await new Promise<void>((resolve) => hang.listen(hangPort, '127.0.0.1', resolve));
  });

  after(async () => {
    for (const socket of hangSockets) socket.destroy();
    hang?.close();
    if (daemon?.pid) process.kill(-daemon.pid, 'SIGTERM');
    await rm(root, { recursive: true, force: true });
    for (const file of PWNED) assert.equal(existsSync(file), false, `${file} exists`);
  });

  afterEach(async () => {
    assert.deepEqual(await readdir(workDir), [], 'the checkout is always removed');
  });

  it('clones a branch', async () => {
    const progress: string[] = [];
    const source = await fetch({ url: url('repo.git'), ref: 'main' }, { onProgress: (l) => progress.push(l) });
    assert.equal(source.commit, commits.main);
    assert.deepEqual(await filesOf(source.archive), {
      README: 'version 2\n',
      'app/Dockerfile': 'FROM scratch\n',
      'app/run': '-> run.sh',
      'app/run.sh': '#!/bin/sh\n (x)',
      'app/shared': '-> ../README',
      linked: '-> app',
      'notes.txt': 'a file, not a folder',
    });
    assert.equal(source.files, 7);
    assert.ok(progress.some((l) => /Cloning into|Receiving objects|remote:/.test(l)), progress.join('\n'));
    assert.ok(!progress.some((l) => l.includes(workDir)), 'the worker\'s temp folder is not shown');
    // The same commit always gives the same archive.
    assert.equal((await fetch({ url: url('repo.git'), ref: 'main' })).sha256, source.sha256);
  });

  it('clones a tag, another branch, and a commit that is no branch tip', async () => {
    const tagged = await fetch({ url: url('repo.git'), ref: 'v1' });
    assert.equal(tagged.commit, commits.v1);
    assert.equal((await filesOf(tagged.archive)).README, 'version 1\n');
    const other = await fetch({ url: url('repo.git'), ref: 'other' });
    assert.equal(other.commit, commits.other);
    assert.deepEqual(await filesOf(other.archive), { 'other.txt': 'the other branch\n' });
    const bySha = await fetch({ url: url('repo.git'), ref: commits.v1! });
    assert.equal(bySha.commit, commits.v1);
    assert.equal(bySha.sha256, tagged.sha256);
  });

  it('takes a subdirectory as the root of the source', async () => {
    const source = await fetch({ url: url('repo.git'), ref: 'v1', subdir: 'app' });
    assert.deepEqual(await filesOf(source.archive), { Dockerfile: 'FROM scratch\n', run: '-> run.sh', 'run.sh': '#!/bin/sh\n (x)' });
  });

  it('refuses a subdirectory that is missing, a file, reached through a link, or holding a link out of it', async () => {
    await refused(fetch({ url: url('repo.git'), ref: 'main', subdir: 'nope' }), 'GIT_SUBDIR_MISSING');
    await refused(fetch({ url: url('repo.git'), ref: 'main', subdir: 'notes.txt' }), 'GIT_SUBDIR_MISSING');
    await refused(fetch({ url: url('repo.git'), ref: 'main', subdir: 'linked' }), 'GIT_SUBDIR_REFUSED');
    const out = await refused(fetch({ url: url('repo.git'), ref: 'main', subdir: 'app' }), 'SOURCE_LINK_ESCAPES');
    assert.equal(out.entry, 'shared');
  });

  it('refuses a repository whose links point outside it', async () => {
    await refused(fetch({ url: url('repo.git'), ref: 'evil' }), 'SOURCE_LINK_ESCAPES');
  });

  for (const [bad, evenWhenFileUrlsAllowed] of [
    ['ext::sh -c touch% /tmp/pwned', true],
    ['-upload-pack=touch /tmp/x', true],
    ['--upload-pack=touch /tmp/pwned', true],
    ['http://x y', true],
    ['file:///etc', false],
    ['/etc', false],
  ] as const) {
    it(`refuses the URL ${JSON.stringify(bad)} before running git`, async () => {
      await refused(fetch({ url: bad, ref: 'main' }), 'GIT_URL_REFUSED');
      if (evenWhenFileUrlsAllowed) await refused(fetch({ url: bad, ref: 'main' }, { allowFileUrls: true }), 'GIT_URL_REFUSED');
    });
  }

  for (const ref of ['--upload-pack=touch /tmp/pwned', '-b', 'a..b', 'main:evil', 'a b']) {
    it(`refuses the ref ${JSON.stringify(ref)}`, async () => {
      await refused(fetch({ url: url('repo.git'), ref }), 'GIT_REF_REFUSED');
    });
  }

  it('says so when the branch, tag or commit does not exist', async () => {
    const err = await refused(fetch({ url: url('repo.git'), ref: 'no-such-branch' }), 'GIT_REF_NOT_FOUND');
    assert.match(err.message, /no-such-branch/);
    await refused(fetch({ url: url('repo.git'), ref: '1'.repeat(40) }), 'GIT_REF_NOT_FOUND');
  });

  it("fails with git's own words when the repository does not exist", async () => {
    const err = await refused(fetch({ url: url('missing.git'), ref: 'main' }), 'GIT_CLONE_FAILED');
    assert.match(err.message, /fatal/);
  });

  it('stops a clone growing past maxBytes', async () => {
    const started = Date.now();
    const err = await refused(fetch({ url: url('big.git'), ref: 'main' }, { maxBytes: 4 * 1024 * 1024, pollMs: 50 }), 'GIT_TOO_LARGE');
    assert.match(err.message, /git was stopped/, 'killed while running, not found too large afterwards');
    assert.ok(Date.now() - started < 10_000);
  });

  it('refuses a checkout over maxBytes even when git finishes between two measurements', async () => {
    await refused(fetch({ url: url('repo.git'), ref: 'main' }, { maxBytes: 10, pollMs: 60_000 }), 'GIT_TOO_LARGE');
  });

  it('times out on a server that never answers', async () => {
    const started = Date.now();
    await refused(fetch({ url: `git://127.0.0.1:${hangPort}/repo.git`, ref: 'main' }, { timeoutMs: 1500 }), 'GIT_TIMEOUT');
    const took = Date.now() - started;
    assert.ok(took >= 1400 && took < 6000, `took ${took} ms`);
  });

  it('stops at once when aborted, with the signal’s reason', async () => {
    const controller = new AbortController();
    const reason = new Error('build cancelled');
    setTimeout(() => controller.abort(reason), 300);
    const started = Date.now();
    await assert.rejects(fetch({ url: `git://127.0.0.1:${hangPort}/repo.git`, ref: 'main' }, { signal: controller.signal }), (err) => err === reason);
    assert.ok(Date.now() - started < 3000);
    // Already aborted: nothing runs.
    await assert.rejects(fetch({ url: url('repo.git'), ref: 'main' }, { signal: AbortSignal.abort(reason) }), (err) => err === reason);
  });

  it('clones file:// URLs and local paths only when allowed', async () => {
    const local = path.join(root, 'srv', 'repo.git');
    await refused(fetch({ url: `file://${local}`, ref: 'main' }), 'GIT_URL_REFUSED');
    await refused(fetch({ url: local, ref: 'main' }), 'GIT_URL_REFUSED');
    assert.equal((await fetch({ url: `file://${local}`, ref: 'main' }, { allowFileUrls: true })).commit, commits.main);
    assert.equal((await fetch({ url: local, ref: 'other' }, { allowFileUrls: true })).commit, commits.other);
  });
});
