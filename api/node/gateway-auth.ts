import { timingSafeEqual } from 'node:crypto';
import type { Request } from 'express';
import { sha256 } from '../../core/crypto.js';
import { AppError, ErrorCode } from '../../core/errors.js';
import { NODE_ID_PATTERN } from '../../core/pki.js';

/** The header the gateway proves itself with, and the one in which it names the node whose certificate it verified. */
export const GATEWAY_HEADER = 'x-glider-gateway';
export const NODE_HEADER = 'x-glider-node';

export type GatewayWord = { via: 'direct' } | { via: 'gateway'; nodeId: string | undefined };

/**
 * Who a request comes from, as far as the gateway vouches for it: a request without the gateway's secret
 * came straight to the API (a pod's runner, an operator); with it, the gateway names the node (or none, for
 * enrolment). A wrong secret is refused outright, and a node named without the secret is never believed.
 */
export function gatewayWord(req: Request, secret: string | undefined): GatewayWord {
  const presented = req.get(GATEWAY_HEADER);
  const named = req.get(NODE_HEADER);
  if (presented === undefined) {
    if (named !== undefined) throw new AppError(ErrorCode.NodeIdentityRequired, `${NODE_HEADER} is set by the node gateway only`);
    return { via: 'direct' };
  }
  if (!secret || !timingSafeEqual(sha256(presented), sha256(secret))) throw new AppError(ErrorCode.Unauthenticated, 'the gateway\'s secret is not valid');
  if (named !== undefined && !NODE_ID_PATTERN.test(named)) throw new AppError(ErrorCode.NodeIdentityRequired, `${NODE_HEADER} does not hold a node id`);
  return { via: 'gateway', nodeId: named };
}
