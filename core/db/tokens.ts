import { randomBytes, timingSafeEqual } from 'node:crypto';
import { sha256 } from '../crypto.js';
import { AppError, ErrorCode } from '../errors.js';
import { PgCode, pgErrorCode, type Queryable } from './pool.js';

export const ROLES = ['admin', 'author', 'operator', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

export interface Token {
  id: string;
  name: string;
  role: Role;
  createdBy: string;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  revokedBy: string | null;
}

interface TokenRow {
  id: string;
  name: string;
  role: Role;
  secret_hash: Buffer;
  created_by: string;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  revoked_by: string | null;
}

const toToken = (r: TokenRow): Token => ({
  id: r.id,
  name: r.name,
  role: r.role,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  expiresAt: r.expires_at?.toISOString() ?? null,
  revokedAt: r.revoked_at?.toISOString() ?? null,
  revokedBy: r.revoked_by,
});

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
const randomText = (n: number) => Array.from(randomBytes(n), (b) => ALPHABET[b % ALPHABET.length]).join('');

/** `ggt_<id>_<secret>`: the prefix makes leaked tokens easy to find by secret scanners. */
const TOKEN_PATTERN = /^ggt_([a-z0-9]{12})_([a-z0-9]{40})$/;

export async function createToken(
  db: Queryable,
  t: { name: string; role: Role; createdBy: string; expiresAt?: Date | undefined },
): Promise<{ token: Token; secret: string }> {
  const id = randomText(12);
  const secret = randomText(40);
  try {
    const { rows } = await db.query<TokenRow>(
      `INSERT INTO tokens (id, name, role, secret_hash, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
      [id, t.name, t.role, sha256(secret), t.createdBy, t.expiresAt ?? null],
    );
    return { token: toToken(rows[0]!), secret: `ggt_${id}_${secret}` };
  } catch (err) {
    if (pgErrorCode(err) === PgCode.UniqueViolation) {
      throw new AppError(ErrorCode.TokenExists, `a token named '${t.name}' already exists`, { name: t.name });
    }
    throw err;
  }
}

export type Verification = { ok: true; token: Token } | { ok: false; why: 'malformed' | 'unknown' | 'expired' | 'revoked' };

export async function verifyToken(db: Queryable, presented: string): Promise<Verification> {
  const m = TOKEN_PATTERN.exec(presented);
  if (!m) return { ok: false, why: 'malformed' };
  const { rows } = await db.query<TokenRow>('SELECT * FROM tokens WHERE id = $1', [m[1]]);
  const row = rows[0];
  // Compare hashes in constant time, so response timing says nothing about the secret.
  if (!row || !timingSafeEqual(row.secret_hash, sha256(m[2]!))) return { ok: false, why: 'unknown' };
  if (row.revoked_at) return { ok: false, why: 'revoked' };
  if (row.expires_at && row.expires_at.getTime() <= Date.now()) return { ok: false, why: 'expired' };
  return { ok: true, token: toToken(row) };
}

export async function listTokens(db: Queryable): Promise<Token[]> {
  const { rows } = await db.query<TokenRow>('SELECT * FROM tokens ORDER BY created_at, id');
  return rows.map(toToken);
}

export async function getToken(db: Queryable, id: string): Promise<Token | undefined> {
  const { rows } = await db.query<TokenRow>('SELECT * FROM tokens WHERE id = $1', [id]);
  return rows[0] && toToken(rows[0]);
}

/** Idempotent: revoking a revoked token keeps its first revocation. */
export async function revokeToken(db: Queryable, id: string, by: string): Promise<Token | undefined> {
  await db.query('UPDATE tokens SET revoked_at = now(), revoked_by = $2 WHERE id = $1 AND revoked_at IS NULL', [id, by]);
  return getToken(db, id);
}

export async function hasActiveAdmin(db: Queryable): Promise<boolean> {
  const { rowCount } = await db.query(
    `SELECT 1 FROM tokens WHERE role = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) LIMIT 1`,
  );
  return rowCount === 1;
}
