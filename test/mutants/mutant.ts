/**
 * A mutant: a deliberate break of the product, kept as a patch under test/mutants/, with the one test that
 * must catch it. The header names both:
 *
 *   # Mutant: what the break does, in product terms
 *   # Test: test/integration/state.test.ts      (a test file; or a Go package folder, e.g. infra/images/pod-runner)
 *   # Name: the exact title of the test that must fail   (a Go test function, for a Go package)
 *
 *   diff --git a/… b/…                          (`git apply` skips the header)
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';

export const MUTANTS_DIR = import.meta.dirname;

export interface Mutant {
  /** The patch file's name without `.patch`. */
  id: string;
  file: string;
  description: string;
  /** Relative to the repository's root. */
  test: string;
  name: string;
  kind: 'node' | 'go';
  /** The repository paths the patch changes. */
  touches: string[];
}

export class MutantFormatError extends Error {}

export function parseMutant(file: string, text: string): Mutant {
  const field = (key: string) => {
    const m = new RegExp(`^# ${key}:[ \\t]*(.+?)[ \\t]*$`, 'm').exec(text.slice(0, text.search(/^diff --git /m) >>> 0));
    if (!m?.[1]) throw new MutantFormatError(`${path.basename(file)}: no '# ${key}:' line before the diff`);
    return m[1];
  };
  const touches = [...text.matchAll(/^diff --git a\/(\S+) b\/(\S+)$/gm)].map((m) => m[2]!);
  if (touches.length === 0) throw new MutantFormatError(`${path.basename(file)}: no 'diff --git' section`);
  const test = field('Test');
  return {
    id: path.basename(file, '.patch'),
    file,
    description: field('Mutant'),
    test,
    name: field('Name'),
    kind: test.endsWith('.ts') ? 'node' : 'go',
    touches,
  };
}

export async function readMutant(file: string): Promise<Mutant> {
  return parseMutant(file, await readFile(file, 'utf8'));
}

export type TestVerdict = 'passed' | 'failed' | 'skipped' | 'missing';

/**
 * The verdict of the test titled `name` in node's TAP output: failed if any test of that title failed
 * (a title may repeat in several suites); skipped if it, or a suite around it, was skipped by the test
 * itself (no test cluster, say): a skipped suite's tests are not listed at all; missing if none ran (the
 * test was renamed or removed: the mutant is stale). Tests left out by --test-name-pattern are not listed.
 */
export function verdictFromTap(tap: string, name: string): TestVerdict {
  let passed = false;
  let skipped = false;
  let anySkip = false;
  for (const m of tap.matchAll(/^\s*(not ok|ok) \d+ - (.*)$/gm)) {
    const [title, directive] = splitTapDescription(m[2]!);
    const skip = /^SKIP\b/i.test(directive) && !/does not match pattern/.test(directive);
    anySkip ||= skip;
    if (title !== name) continue;
    if (m[1] === 'not ok') return 'failed';
    if (skip) skipped = true;
    else if (!/^(SKIP|TODO)\b/i.test(directive)) passed = true;
  }
  if (passed) return 'passed';
  return skipped || anySkip ? 'skipped' : 'missing';
}

/** TAP escapes `#` and `\` in a description; an unescaped `#` starts a directive (SKIP, TODO). */
function splitTapDescription(description: string): [string, string] {
  let title = '';
  for (let i = 0; i < description.length; i++) {
    const c = description[i]!;
    if (c === '\\' && i + 1 < description.length) {
      title += description[++i];
    } else if (c === '#') {
      return [title.trimEnd(), description.slice(i + 1).trim()];
    } else {
      title += c;
    }
  }
  return [title, ''];
}

/** The verdict of Go test `name` in `go test -v` output. */
export function verdictFromGo(output: string, name: string): TestVerdict {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  if (new RegExp(`^\\s*--- FAIL: ${escaped} `, 'm').test(output)) return 'failed';
  if (new RegExp(`^\\s*--- PASS: ${escaped} `, 'm').test(output)) return 'passed';
  return 'missing';
}

/**
 * For node's --test-name-pattern, which matches a test's title prefixed by its suites' titles: every test
 * whose full name ends with this title (verdictFromTap then picks the exact title out).
 */
export function namePattern(name: string): string {
  return `${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`;
}
