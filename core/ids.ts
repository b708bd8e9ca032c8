import { randomBytes } from 'node:crypto';

/**
 * Ids double as Kubernetes object names, Docker container names and Temporal workflow ids,
 * so they are short DNS-1123 labels: a kind prefix and 12 characters of [a-z0-9] (~62 bits).
 */
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export type IdKind = 'dep' | 'run' | 'bld' | 'src';

export function newId(kind: IdKind): string {
  const bytes = randomBytes(12);
  let suffix = '';
  for (const b of bytes) suffix += ALPHABET[b % ALPHABET.length];
  return `${kind}-${suffix}`;
}

/** Names chosen by users (templates, nodes): DNS-1123 labels short enough to be prefixed. */
export const NAME_PATTERN = /^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$/;
export const ID_PATTERN = /^(dep|run)-[a-z0-9]{12}$/;

export function isValidName(value: string): boolean {
  return NAME_PATTERN.test(value);
}
