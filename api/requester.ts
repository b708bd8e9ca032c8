import type { Request } from 'express';

/**
 * Who is asking. Until tokens exist (issue 3) every caller is the local operator; routes already record
 * this on everything they create so that change touches only this function.
 */
export function requesterOf(_req: Request): string {
  return 'local-operator';
}
