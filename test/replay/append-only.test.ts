/**
 * Recorded histories are append-only: each one is evidence of how workflows already running in some
 * installation behave, and replay.test.ts keeps today's code able to carry them on. Re-recording a history
 * after a workflow change would erase exactly that evidence. So every history file ever committed under
 * test/replay/histories must still be here, byte for byte as it was first committed (an uncommitted edit
 * fails too). A workflow change that breaks an old history needs `patched()`, not a new recording.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

const HISTORIES = 'test/replay/histories';
/** This test's tree: the checkout, or a scratch copy of it (npm run mutants). */
const TREE = path.resolve(import.meta.dirname, '..', '..');

const git = async (gitDir: string, args: string[]) =>
  (await promisify(execFile)('git', ['--git-dir', gitDir, '-c', 'core.quotePath=false', ...args], { maxBuffer: 64 << 20 })).stdout;

/**
 * The repository whose history counts: npm run mutants runs this test in a scratch copy that is no
 * repository and names the original's in GG_MUTANT_GIT_DIR; otherwise the repository this file lives in.
 */
async function repository(): Promise<string> {
  const named = process.env.GG_MUTANT_GIT_DIR;
  try {
    if (named) return (await git(named, ['rev-parse', '--absolute-git-dir'])).trim();
    const { stdout } = await promisify(execFile)('git', ['rev-parse', '--absolute-git-dir'], { cwd: import.meta.dirname });
    return stdout.trim();
  } catch (err) {
    assert.fail(
      `the append-only check of ${HISTORIES} needs the git repository (a clone with its whole history), and ${named ?? TREE} is none: ${String(err)}`,
    );
  }
}

/** Each history file ever added, with the blob it was first committed with (the oldest addition wins). */
async function firstCommitted(gitDir: string): Promise<Map<string, { blob: string; commit: string }>> {
  // --raw names the blob of each addition; --no-renames makes a renamed history an addition (and its old name a removal).
  const log = await git(gitDir, ['log', '--reverse', '--no-renames', '--diff-filter=A', '--raw', '--no-abbrev', '--format=commit %H', 'HEAD', '--', HISTORIES]);
  const first = new Map<string, { blob: string; commit: string }>();
  let commit = '';
  for (const line of log.split('\n')) {
    if (line.startsWith('commit ')) commit = line.slice('commit '.length);
    const m = /^:\d+ \d+ [0-9a-f]+ ([0-9a-f]+) A\t(.+)$/.exec(line);
    if (m && m[2]!.endsWith('.json') && !first.has(m[2]!)) first.set(m[2]!, { blob: m[1]!, commit });
  }
  return first;
}

describe('recorded workflow histories are append-only', () => {
  it('every history ever committed is still there, unchanged since its first commit', async () => {
    const gitDir = await repository();
    const shallow = (await git(gitDir, ['rev-parse', '--is-shallow-repository'])).trim();
    assert.equal(
      shallow,
      'false',
      `${gitDir} is a shallow clone: the append-only check of ${HISTORIES} needs the whole history (git fetch --unshallow, or clone without --depth)`,
    );
    const first = await firstCommitted(gitDir);
    // The seven hand-recorded histories were committed on 2026-11-25: a history (or a repository) without them is not this one.
    assert.ok(first.size >= 7, `only ${first.size} history files were ever committed under ${HISTORIES} in ${gitDir}`);

    const problems: string[] = [];
    const present: string[] = [];
    for (const [file, { commit }] of first) {
      const content = await readFile(path.join(TREE, file)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      });
      if (content === undefined) problems.push(`${file} (first committed in ${commit.slice(0, 12)}) was removed`);
      else present.push(file);
    }
    // The working copies' blob ids, as git computes them (whatever the repository's hash), without filters.
    const blobs = present.length ? (await git(gitDir, ['hash-object', '--no-filters', '--', ...present.map((f) => path.join(TREE, f))])).trim().split('\n') : [];
    present.forEach((file, i) => {
      const want = first.get(file)!;
      if (blobs[i] !== want.blob) problems.push(`${file} differs from the blob it was first committed with in ${want.commit.slice(0, 12)} (${want.blob.slice(0, 12)})`);
    });
    assert.deepEqual(
      problems,
      [],
      `${problems.join('; ')}. Recorded histories are append-only: restore them (git show <commit>:<file>) and record new files instead; ` +
        'a workflow change that breaks an old history needs patched(), not a new recording (test/replay/histories/README.md)',
    );
  });
});
