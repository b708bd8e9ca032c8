/**
 * The Dockerfile of a template image: the template type's base image with the template's files at
 * /template and labels saying what went in. The files are data; the base image defines how they run
 * (its ENTRYPOINT), so there is no RUN and nothing else that would execute at build time.
 */

/** Where a template's files live in its image. */
export const TEMPLATE_DIR = '/template';
/** The folder of the build context holding the template's files (activities/templates/build-context.ts). */
export const CONTEXT_TEMPLATE_DIR = 'template';

export const TEMPLATE_LABEL = 'io.glider-gun.template';
export const TEMPLATE_VERSION_LABEL = 'io.glider-gun.template-version';
export const SOURCE_DIGEST_LABEL = 'io.glider-gun.source-digest';
export const TEMPLATE_TYPE_LABEL = 'io.glider-gun.template-type';

export interface TemplateImageInput {
  /** The template type's image: `repo[:tag]`, or pinned as `repo@sha256:…`. */
  baseImage: string;
  templateName: string;
  version: number;
  /** sha256 of the normalized source archive, 64 hex digits. */
  sourceDigest: string;
  typeName: string;
  typeVersion: number;
}

// Docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@sha256:hex].
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const DOMAIN = '(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\\[[0-9a-fA-F:]+\\])(?::[0-9]+)?';
const REFERENCE = new RegExp(`^((?:${DOMAIN}/)?${COMPONENT}(?:/${COMPONENT})*)(?::([\\w][\\w.-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?$`);

export interface BaseImageReference {
  /** Everything but the digest: `registry/repo:tag`. */
  name: string;
  digest: string | undefined;
}

/** Docker's rules for an image reference, the name at most 255 characters long as the engine requires. */
function matchReference(ref: string): RegExpExecArray | undefined {
  const m = REFERENCE.exec(ref);
  return m && m[1]!.length <= 255 ? m : undefined;
}

export function isImageReference(ref: string): boolean {
  return matchReference(ref) !== undefined;
}

/**
 * Splits a base image reference, refusing anything that is not one: it goes into a FROM line verbatim,
 * so whitespace, `$` (build-arg expansion) or a newline must never get through.
 */
export function parseBaseImage(ref: string): BaseImageReference {
  const m = matchReference(ref);
  if (!m) throw new RangeError(`base image ${JSON.stringify(ref)} is not an image reference (repo[:tag] or repo@sha256:<64 hex>)`);
  return { name: m[2] ? `${m[1]}:${m[2]}` : m[1]!, digest: m[3] };
}

/**
 * A label value in double quotes. The builder expands `$VAR` in LABEL values and treats `\` as the escape,
 * so `\`, `"` and `$` are escaped; a line break cannot be written inside a Dockerfile word at all, so
 * control characters are refused rather than mangled.
 */
export function quoteLabelValue(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\u2028\u2029]/.test(value)) throw new RangeError(`label value ${JSON.stringify(value)} contains a control character`);
  return `"${value.replace(/[\\"$]/g, (c) => `\\${c}`)}"`;
}

function wholeNumber(what: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what} must be a whole number, not ${n}`);
  return n;
}

function nonEmpty(what: string, s: string): string {
  if (s.trim() === '') throw new RangeError(`${what} must not be empty`);
  return s;
}

/** The labels of a template image, by name; the OCI ones where a standard key fits. */
export function templateLabels(input: TemplateImageInput): Record<string, string> {
  const base = parseBaseImage(input.baseImage);
  if (!/^[a-f0-9]{64}$/.test(input.sourceDigest)) throw new RangeError(`sourceDigest must be 64 lowercase hex digits (sha256), not ${JSON.stringify(input.sourceDigest)}`);
  const name = nonEmpty('templateName', input.templateName);
  const version = wholeNumber('version', input.version);
  const type = `${nonEmpty('typeName', input.typeName)}@${wholeNumber('typeVersion', input.typeVersion)}`;
  return {
    [TEMPLATE_LABEL]: name,
    [TEMPLATE_VERSION_LABEL]: String(version),
    [SOURCE_DIGEST_LABEL]: `sha256:${input.sourceDigest}`,
    [TEMPLATE_TYPE_LABEL]: type,
    'org.opencontainers.image.title': name,
    'org.opencontainers.image.version': String(version),
    'org.opencontainers.image.base.name': base.name,
    // Without a pinned digest the base is whatever the tag pointed at; the base image's own label would
    // otherwise be inherited and wrong, so it is set empty.
    'org.opencontainers.image.base.digest': base.digest ?? '',
    // No org.opencontainers.image.created: a build time in the labels would make every build differ.
  };
}

export function generateDockerfile(input: TemplateImageInput): string {
  const labels = Object.entries(templateLabels(input)).map(([k, v]) => `${k}=${quoteLabelValue(v)}`);
  // LABEL comes before COPY so that the first image the build commits is metadata only: when a build is
  // cancelled, the image-build module finds what the engine committed after it (the COPY) as its children.
  return [
    '# Generated by Glider Gun: a template image (the template type image with the template files at /template).',
    `FROM ${input.baseImage}`,
    `LABEL ${labels.join(' \\\n      ')}`,
    `COPY --chown=0:0 ${CONTEXT_TEMPLATE_DIR}/ ${TEMPLATE_DIR}/`,
    '',
  ].join('\n');
}

/**
 * The images a Dockerfile builds FROM (stage names excluded), so they can be pulled before the build:
 * the classic builder pulls a missing base itself, but without credentials and without our log lines.
 */
export function baseImagesOf(dockerfile: string): string[] {
  const stages = new Set<string>();
  const images: string[] = [];
  for (const line of dockerfile.split('\n')) {
    const m = /^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$/i.exec(line);
    if (!m) continue;
    const image = m[1]!;
    if (!stages.has(image.toLowerCase()) && image !== 'scratch' && !images.includes(image)) images.push(image);
    if (m[2]) stages.add(m[2].toLowerCase());
  }
  return images;
}

/**
 * The labels a Dockerfile's LABEL instructions set, read back with the builder's quoting (as
 * generateDockerfile writes them: `key="value"`, continued lines). Unquoted values are not read.
 */
export function labelsOf(dockerfile: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const line of dockerfile.replace(/\\\n/g, ' ').split('\n')) {
    if (!/^\s*LABEL\s/i.test(line)) continue;
    for (const m of line.matchAll(/([^\s=]+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!.replace(/\\(.)/g, '$1');
  }
  return labels;
}

/**
 * How many images a classic build of this Dockerfile commits: one per instruction other than FROM
 * (comments, blank lines and continuations are not instructions).
 */
export function committedSteps(dockerfile: string): number {
  return dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((line) => /^\s*[A-Za-z]+\s/.test(line) && !/^\s*FROM\s/i.test(line)).length;
}
