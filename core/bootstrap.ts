import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Db } from './db/pool.js';
import { createToken, hasActiveAdmin, verifyToken } from './db/tokens.js';

export type AdminTokenState = { state: 'existing' | 'created'; file: string } | { state: 'elsewhere' };

/**
 * First start: with no admin token anywhere, make one and write it to a file only its owner can read.
 * Later starts keep what exists; an admin can make more tokens through the API.
 */
export async function ensureAdminToken(db: Db, file: string): Promise<AdminTokenState> {
  const existing = await readFile(file, 'utf8').catch(() => undefined);
  if (existing) {
    const verified = await verifyToken(db, existing.trim());
    if (verified.ok && verified.token.role === 'admin') return { state: 'existing', file };
  }
  if (await hasActiveAdmin(db)) return { state: 'elsewhere' };
  const name = existing === undefined ? 'admin' : `admin-${randomBytes(3).toString('hex')}`;
  const { secret } = await createToken(db, { name, role: 'admin', createdBy: 'bootstrap' }).catch(() =>
    createToken(db, { name: `admin-${randomBytes(3).toString('hex')}`, role: 'admin', createdBy: 'bootstrap' }),
  );
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, `${secret}\n`, { mode: 0o600 });
  return { state: 'created', file };
}
