import type { Db } from '../../core/db/pool.js';
import { sha256 } from '../../core/crypto.js';
import { AppError, ErrorCode } from '../../core/errors.js';
import type { RouteResult } from './route.js';

export const IDEMPOTENCY_HEADER = 'idempotency-key';
const KEY_PATTERN = /^[\x21-\x7e]{1,200}$/;

/** Key order in a JSON body must not make the same request look different. */
export function stableStringify(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableStringify(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

interface StoredRow {
  method: string;
  path: string;
  request_hash: Buffer;
  status_code: number | null;
  response_body: unknown;
  response_headers: Record<string, string>;
}

/**
 * The same key and the same request answer with the first response, without doing the work again; the
 * same key with another request is refused. Only successful answers are kept: a refused request
 * (409, 422, …) may be retried with the same key once its cause is gone.
 */
export async function withIdempotency(
  db: Db,
  opts: { principal: string; key: string; method: string; path: string; body: unknown },
  run: () => Promise<RouteResult>,
): Promise<RouteResult> {
  if (!KEY_PATTERN.test(opts.key)) {
    throw new AppError(ErrorCode.ValidationFailed, 'the Idempotency-Key header must be 1-200 printable ASCII characters');
  }
  const hash = sha256(`${opts.method} ${opts.path}\n${stableStringify(opts.body)}`);
  const claimed = await db.query(
    `INSERT INTO idempotency_keys (principal, key, method, path, request_hash) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (principal, key) DO NOTHING`,
    [opts.principal, opts.key, opts.method, opts.path, hash],
  );
  if (claimed.rowCount === 1) {
    let result: RouteResult;
    try {
      result = await run();
    } catch (err) {
      await db.query('DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2', [opts.principal, opts.key]);
      throw err;
    }
    if (result.status >= 200 && result.status < 300) {
      await db.query(
        `UPDATE idempotency_keys SET status_code = $3, response_body = $4, response_headers = $5 WHERE principal = $1 AND key = $2`,
        [opts.principal, opts.key, result.status, JSON.stringify(result.body ?? null), JSON.stringify(result.headers ?? {})],
      );
    } else {
      await db.query('DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2', [opts.principal, opts.key]);
    }
    return result;
  }
  const { rows } = await db.query<StoredRow>('SELECT * FROM idempotency_keys WHERE principal = $1 AND key = $2', [opts.principal, opts.key]);
  const stored = rows[0];
  if (!stored) {
    // Claimed and released between our two statements: the first request failed; this one may go ahead.
    return withIdempotency(db, opts, run);
  }
  if (stored.method !== opts.method || stored.path !== opts.path || !stored.request_hash.equals(hash)) {
    throw new AppError(ErrorCode.IdempotencyKeyReused, 'this Idempotency-Key was used for a different request; use a new key', {
      key: opts.key,
    });
  }
  if (stored.status_code === null) {
    throw new AppError(ErrorCode.IdempotencyKeyInUse, 'a request with this Idempotency-Key is still being handled; retry shortly', {
      key: opts.key,
    });
  }
  return {
    status: stored.status_code,
    body: stored.response_body,
    headers: { ...stored.response_headers, 'idempotent-replayed': 'true' },
  };
}
