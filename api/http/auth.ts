import type { Request } from 'express';
import type { Queryable } from '../../core/db/pool.js';
import { verifyToken, type Role } from '../../core/db/tokens.js';
import { AppError, ErrorCode } from '../../core/errors.js';
import type { Principal } from './route.js';

const WHY: Record<'malformed' | 'unknown' | 'expired' | 'revoked', string> = {
  malformed: 'the bearer token is not a Glider Gun token',
  unknown: 'the bearer token is not valid',
  expired: 'the bearer token has expired',
  revoked: 'the bearer token has been revoked',
};

export async function authenticate(db: Queryable, req: Request): Promise<Principal> {
  const header = req.headers.authorization;
  if (!header) throw new AppError(ErrorCode.Unauthenticated, 'this route needs a bearer token (Authorization: Bearer ggt_…)');
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) throw new AppError(ErrorCode.Unauthenticated, 'the Authorization header must be "Bearer <token>"');
  const result = await verifyToken(db, m[1]!);
  if (!result.ok) throw new AppError(ErrorCode.Unauthenticated, WHY[result.why], { reason: result.why });
  return { tokenId: result.token.id, name: result.token.name, role: result.token.role };
}

export function authorize(principal: Principal, roles: readonly Role[], operation: string): void {
  if (!roles.includes(principal.role)) {
    throw new AppError(ErrorCode.Forbidden, `role '${principal.role}' may not ${operation}; it needs one of: ${roles.join(', ')}`, {
      role: principal.role,
      allowed: roles,
    });
  }
}
