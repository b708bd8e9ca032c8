import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { baseImagesOf, committedSteps, generateDockerfile, isImageReference, labelsOf, parseBaseImage, quoteLabelValue, templateLabels } from '../../activities/templates/dockerfile.js';

const DIGEST = 'a'.repeat(64);
const input = { baseImage: 'registry.example:5000/glider-gun/types/terraform:1.9', templateName: 'vpc', version: 3, sourceDigest: DIGEST, typeName: 'terraform', typeVersion: 2 };

/** Reads a LABEL value back the way the builder does: inside double quotes, `\x` is x for `\`, `"` and `$`. */
function unquote(word: string): string {
  assert.match(word, /^".*"$/s);
  return word.slice(1, -1).replace(/\\([\\"$])/g, '$1');
}

describe('template Dockerfile', () => {
  it('is FROM the base, the labels, and the content copied to /template; nothing else', () => {
    const dockerfile = generateDockerfile(input);
    const instructions = dockerfile
      .replace(/\\\n/g, ' ')
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'))
      .map((l) => l.split(/\s+/)[0]);
    assert.deepEqual(instructions, ['FROM', 'LABEL', 'COPY']);
    assert.match(dockerfile, /^FROM registry\.example:5000\/glider-gun\/types\/terraform:1\.9$/m);
    assert.match(dockerfile, /^COPY --chown=0:0 template\/ \/template\/$/m);
    assert.doesNotMatch(dockerfile, /^\s*(RUN|ENTRYPOINT|CMD|ONBUILD|SHELL|USER|WORKDIR|ENV|ARG)\b/im);
    assert.ok(dockerfile.endsWith('\n'));
  });

  it('labels what went in, with the OCI keys that fit', () => {
    assert.deepEqual(templateLabels(input), {
      'io.glider-gun.template': 'vpc',
      'io.glider-gun.template-version': '3',
      'io.glider-gun.source-digest': `sha256:${DIGEST}`,
      'io.glider-gun.template-type': 'terraform@2',
      'org.opencontainers.image.title': 'vpc',
      'org.opencontainers.image.version': '3',
      'org.opencontainers.image.base.name': 'registry.example:5000/glider-gun/types/terraform:1.9',
      'org.opencontainers.image.base.digest': '',
    });
    const dockerfile = generateDockerfile(input);
    assert.match(dockerfile, /io\.glider-gun\.source-digest="sha256:a{64}"/);
    assert.match(dockerfile, /io\.glider-gun\.template-type="terraform@2"/);
  });

  it('keeps a base pinned by digest as it is, and names its digest', () => {
    const pinned = `registry.example:5000/types/terraform@sha256:${'b'.repeat(64)}`;
    const dockerfile = generateDockerfile({ ...input, baseImage: pinned });
    assert.match(dockerfile, new RegExp(`^FROM ${pinned.replace(/[.]/g, '\\.')}$`, 'm'));
    const labels = templateLabels({ ...input, baseImage: `registry.example:5000/types/terraform:1.9@sha256:${'b'.repeat(64)}` });
    assert.equal(labels['org.opencontainers.image.base.name'], 'registry.example:5000/types/terraform:1.9');
    assert.equal(labels['org.opencontainers.image.base.digest'], `sha256:${'b'.repeat(64)}`);
  });

  it('quotes label values so the builder reads back exactly the name', () => {
    for (const value of ['plain', 'with space', 'q"uote', 'back\\slash', 'trailing\\', '$HOME', '${x:-y}', "single'", 'ünïcødé', '# not a comment', 'a \\\n']) {
      if (value.includes('\n')) {
        assert.throws(() => quoteLabelValue(value), /control character/);
        continue;
      }
      const quoted = quoteLabelValue(value);
      assert.equal(unquote(quoted), value);
      // Every `$` escaped: no expansion; no line ending in a backslash: no continuation.
      assert.doesNotMatch(quoted, /(^|[^\\])(\\\\)*\$/);
      assert.doesNotMatch(quoted, /\\$/);
    }
    const tricky = { ...input, templateName: 'a "b" $c \\', typeName: 'x\\' };
    assert.deepEqual(labelsOf(generateDockerfile(tricky)), templateLabels(tricky));
    const hostile = generateDockerfile({ ...input, templateName: 'x" \\ RUN evil "$(id)', typeName: 'a=b c' });
    assert.deepEqual(
      hostile.split('\n').filter((l) => /^\S/.test(l) && !l.startsWith('#')).map((l) => l.split(' ')[0]),
      ['FROM', 'LABEL', 'COPY'],
    );
  });

  it('refuses what cannot be written safely', () => {
    assert.throws(() => generateDockerfile({ ...input, templateName: 'a\nRUN rm -rf /' }), /control character/);
    assert.throws(() => generateDockerfile({ ...input, templateName: 'tab\there' }), /control character/);
    assert.throws(() => generateDockerfile({ ...input, templateName: ' ' }), /templateName/);
    assert.throws(() => generateDockerfile({ ...input, sourceDigest: 'sha256:' + DIGEST }), /sourceDigest/);
    assert.throws(() => generateDockerfile({ ...input, sourceDigest: DIGEST.toUpperCase() }), /sourceDigest/);
    assert.throws(() => generateDockerfile({ ...input, version: 1.5 }), /version/);
    assert.throws(() => generateDockerfile({ ...input, typeVersion: -1 }), /typeVersion/);
    for (const base of ['busybox\nRUN id', 'busybox AS x', '$BASE', 'busybox:latest RUN', 'Busybox', 'busybox@sha256:abc', '', '--platform=linux/amd64 busybox']) {
      assert.throws(() => generateDockerfile({ ...input, baseImage: base }), /not an image reference/, base);
    }
  });

  it('parses image references by Docker\'s grammar', () => {
    assert.deepEqual(parseBaseImage('busybox'), { name: 'busybox', digest: undefined });
    assert.deepEqual(parseBaseImage('localhost:5000/a/b_c-d.e:v1.2-rc'), { name: 'localhost:5000/a/b_c-d.e:v1.2-rc', digest: undefined });
    assert.deepEqual(parseBaseImage('[::1]:5000/a'), { name: '[::1]:5000/a', digest: undefined });
    assert.ok(isImageReference('127.0.0.1:5000/glider-gun/templates/vpc:3'));
    assert.ok(!isImageReference('127.0.0.1:5000/glider-gun/templates/VPC:3'));
    assert.ok(!isImageReference(`127.0.0.1:5000/${'a'.repeat(250)}:3`));
    assert.ok(!isImageReference('a:b:c'));
  });

  it('counts the images a build commits: one per instruction but FROM', () => {
    assert.equal(committedSteps(generateDockerfile(input)), 2);
    assert.equal(committedSteps('# c\nFROM a\n\nLABEL a=1 \\\n  b=2\nCOPY x /x\nFROM b AS c\nENV X=1\n'), 3);
  });

  it('finds the images to pull in FROM lines, not the stages', () => {
    assert.deepEqual(baseImagesOf(generateDockerfile(input)), [input.baseImage]);
    assert.deepEqual(baseImagesOf('FROM a:1 AS build\nFROM --platform=linux/amd64 b\nfrom build\nFROM scratch\nFROM a:1\n'), ['a:1', 'b']);
  });
});
