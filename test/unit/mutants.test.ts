/**
 * The mutants (test/mutants) stay usable between runs of `npm run mutants`: each one parses, still applies
 * to the tree, and names a test that exists. Plus the pure parts of the runner: TAP and `go test` verdicts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { MUTANTS_DIR, MutantFormatError, parseMutant, readMutant, verdictFromGo, verdictFromTap } from '../mutants/mutant.js';

const ROOT = path.resolve(MUTANTS_DIR, '..', '..');

/** Whether the source has a test of that title: written out in quotes, or made by a template literal. */
function titledIn(source: string, name: string): boolean {
  if (["'", '"', '`'].some((q) => source.includes(`${q}${name.replaceAll(q, `\\${q}`)}${q}`))) return true;
  const escape = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return [...source.matchAll(/\b(?:it|test|describe)\(\s*`((?:[^`\\]|\\.)*)`/g)].some((m) =>
    new RegExp(`^${m[1]!.split(/\$\{[^}]*\}/).map(escape).join('.+')}$`).test(name),
  );
}

describe('mutants', () => {
  it('every patch under test/mutants parses, applies to the tree, and names a test that exists', async () => {
    const files = (await readdir(MUTANTS_DIR)).filter((f) => f.endsWith('.patch'));
    assert.ok(files.length > 0, 'no mutants at all');
    const problems: string[] = [];
    for (const f of files) {
      const file = path.join(MUTANTS_DIR, f);
      try {
        const m = await readMutant(file);
        if (m.kind === 'node') {
          const source = await readFile(path.join(ROOT, m.test), 'utf8');
          if (!titledIn(source, m.name)) problems.push(`${f}: ${m.test} has no test titled '${m.name}'`);
        } else {
          const source = (await Promise.all((await readdir(path.join(ROOT, m.test))).filter((g) => g.endsWith('_test.go')).map((g) => readFile(path.join(ROOT, m.test, g), 'utf8')))).join('\n');
          if (!source.includes(`func ${m.name}(t *testing.T)`)) problems.push(`${f}: no Go test ${m.name} in ${m.test}`);
        }
        await promisify(execFile)('git', ['apply', '--check', file], { cwd: ROOT }).catch((err: { stderr?: string }) => {
          problems.push(`${f}: does not apply: ${err.stderr?.trim().split('\n')[0]}`);
        });
      } catch (err) {
        problems.push(err instanceof Error ? err.message : String(err));
      }
    }
    assert.deepEqual(problems, []);
  });

  it('reads a mutant header, and refuses one without a test name', () => {
    const diff = 'diff --git a/core/x.ts b/core/x.ts\n--- a/core/x.ts\n+++ b/core/x.ts\n@@ -1 +1 @@\n-a\n+b\n';
    const m = parseMutant('/m/state--x.patch', `# Mutant: breaks x\n# Test: test/integration/state.test.ts\n# Name: keeps x (and y)\n\n${diff}`);
    assert.deepEqual(
      { id: m.id, test: m.test, name: m.name, kind: m.kind, touches: m.touches },
      { id: 'state--x', test: 'test/integration/state.test.ts', name: 'keeps x (and y)', kind: 'node', touches: ['core/x.ts'] },
    );
    assert.equal(parseMutant('/m/g.patch', `# Mutant: m\n# Test: infra/images/pod-runner\n# Name: TestX\n${diff}`).kind, 'go');
    assert.throws(() => parseMutant('/m/y.patch', `# Mutant: m\n# Test: t.test.ts\n${diff}# Name: after the diff\n`), MutantFormatError);
  });

  it('takes a test\'s verdict from TAP: nested, escaped, skipped and missing titles', () => {
    const tap = [
      'TAP version 13',
      '# Subtest: suite',
      '    ok 1 - keeps x',
      '    not ok 2 - reads a \\# sign',
      '    ok 3 - other # SKIP test name does not match pattern',
      'ok 1 - suite',
    ].join('\n');
    assert.equal(verdictFromTap(tap, 'keeps x'), 'passed');
    assert.equal(verdictFromTap(tap, 'reads a # sign'), 'failed');
    assert.equal(verdictFromTap(tap, 'other'), 'missing');
    assert.equal(verdictFromTap(tap, 'renamed'), 'missing');
    assert.equal(verdictFromTap('ok 1 - on the cluster # SKIP GG_TEST_KUBERNETES=0: no test cluster started', 'on the cluster'), 'skipped');
    // A skipped suite does not list its tests.
    assert.equal(verdictFromTap('ok 1 - Kubernetes runs # SKIP GG_TEST_KUBERNETES=0', 'runs a Job'), 'skipped');
  });

  it('takes a Go test\'s verdict from go test -v', () => {
    const out = '=== RUN   TestA\n--- FAIL: TestA (0.00s)\n=== RUN   TestAB\n--- PASS: TestAB (0.01s)\n';
    assert.equal(verdictFromGo(out, 'TestA'), 'failed');
    assert.equal(verdictFromGo(out, 'TestAB'), 'passed');
    assert.equal(verdictFromGo(out, 'TestB'), 'missing');
  });
});
