import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { z } from 'zod';
import { StateStorageError } from '../core/db/state.js';
import { AppError, ErrorCode } from '../core/errors.js';

/** The one place error codes become HTTP statuses. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  [ErrorCode.ValidationFailed]: 400,
  [ErrorCode.MalformedJson]: 400,
  [ErrorCode.UnsupportedMediaType]: 415,
  [ErrorCode.PayloadTooLarge]: 413,
  [ErrorCode.RouteNotFound]: 404,
  [ErrorCode.TemplateNotFound]: 404,
  [ErrorCode.TemplateVersionNotFound]: 404,
  [ErrorCode.DeploymentNotFound]: 404,
  [ErrorCode.RunNotFound]: 404,
  [ErrorCode.StateVersionNotFound]: 404,
  [ErrorCode.StateCorrupt]: 409,
  [ErrorCode.StateKeyMismatch]: 409,
  [ErrorCode.StateTooLarge]: 413,
  [ErrorCode.StateWriteSuperseded]: 409,
  [ErrorCode.NodeNotFound]: 404,
  [ErrorCode.NodeExists]: 409,
  [ErrorCode.NodeNotPending]: 409,
  [ErrorCode.EnrolmentRefused]: 403,
  [ErrorCode.NodeRevoked]: 403,
  [ErrorCode.NodeIdentityRequired]: 401,
  [ErrorCode.RunNotOfNode]: 404,
  [ErrorCode.CertificateRequestInvalid]: 400,
  [ErrorCode.TemplateExists]: 409,
  [ErrorCode.TemplateTypeNotFound]: 404,
  [ErrorCode.TemplateTypeVersionNotFound]: 404,
  [ErrorCode.TemplateTypeExists]: 409,
  [ErrorCode.TemplateTypeVersionInUse]: 409,
  [ErrorCode.SourceRejected]: 422,
  [ErrorCode.SourceNotFound]: 404,
  [ErrorCode.BuildNotFound]: 404,
  [ErrorCode.BuildNotActive]: 409,
  [ErrorCode.BuildsUnavailable]: 422,
  [ErrorCode.TokenExists]: 409,
  [ErrorCode.TokenNotFound]: 404,
  [ErrorCode.Unauthenticated]: 401,
  [ErrorCode.Forbidden]: 403,
  [ErrorCode.IdempotencyKeyReused]: 422,
  [ErrorCode.IdempotencyKeyInUse]: 409,
  [ErrorCode.RunInProgress]: 409,
  [ErrorCode.RunNotActive]: 409,
  [ErrorCode.InvalidParameters]: 422,
  [ErrorCode.LimitExceeded]: 422,
  [ErrorCode.UnknownAction]: 422,
  [ErrorCode.TargetUnavailable]: 422,
  [ErrorCode.Throttled]: 429,
  [ErrorCode.LogOffsetMismatch]: 409,
  [ErrorCode.DependencyUnavailable]: 503,
  [ErrorCode.Internal]: 500,
};

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

/** Turns a zod failure into a 400 listing every problem with its JSON path. */
export function validationError(where: string, error: z.ZodError): AppError {
  const problems = error.issues.map((i) => ({ path: i.path.join('.'), problem: i.message }));
  const summary = problems.map((p) => (p.path ? `${p.path}: ${p.problem}` : p.problem)).join('; ');
  return new AppError(ErrorCode.ValidationFailed, `invalid ${where}: ${summary}`, { problems });
}

export function parseOrThrow<S extends z.ZodType>(schema: S, value: unknown, where: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw validationError(where, parsed.error);
  return parsed.data;
}

export const notFoundRoute: RequestHandler = (req, _res, next) => {
  next(new AppError(ErrorCode.RouteNotFound, `no route for ${req.method} ${req.path}`));
};

/** Errors that mean Postgres could not be reached or refused service, rather than a bug of ours. */
const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', '57P01', '57P02', '57P03', '53300']);

function isUnavailable(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = 'code' in err ? err.code : undefined;
  if (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) return true;
  const message = err instanceof Error ? err.message : '';
  return /Connection terminated|timeout exceeded when trying to connect/.test(message);
}

/** Body-parser errors carry a `type`; everything else that is not an AppError is an internal error. */
const STATE_ERROR_CODES = {
  'state-corrupt': ErrorCode.StateCorrupt,
  'state-key-mismatch': ErrorCode.StateKeyMismatch,
  'state-too-large': ErrorCode.StateTooLarge,
  'state-write-superseded': ErrorCode.StateWriteSuperseded,
} as const;

export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof StateStorageError) return new AppError(STATE_ERROR_CODES[err.reason], err.message, err.details);
  if (isUnavailable(err)) return new AppError(ErrorCode.DependencyUnavailable, 'the database is unavailable; try again shortly');
  const type = typeof err === 'object' && err !== null && 'type' in err ? err.type : undefined;
  if (type === 'entity.parse.failed') return new AppError(ErrorCode.MalformedJson, 'the request body is not valid JSON');
  if (type === 'entity.too.large') return new AppError(ErrorCode.PayloadTooLarge, 'the request body is too large');
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
    return new AppError(ErrorCode.UnsupportedMediaType, 'the request body must be UTF-8 JSON');
  }
  return new AppError(ErrorCode.Internal, 'internal error');
}

export function errorHandler(logError: (err: unknown, req: { method: string; path: string }) => void): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    if (req.destroyed && !req.complete) {
      // The client went away half-way through sending its request (an upload cut off): there is no one to
      // answer, and nothing of ours failed.
      res.destroy();
      return;
    }
    const appError = toAppError(err);
    if (appError.code === ErrorCode.Internal || appError.code === ErrorCode.DependencyUnavailable) logError(err, req);
    if (res.headersSent) {
      // A streamed answer failed half-way: its status is gone, so cut the connection and the client sees a
      // broken download rather than a short one that looks complete.
      if (!res.writableEnded) res.destroy();
      return;
    }
    const body: ErrorBody = { code: appError.code, message: appError.message };
    if (appError.details) body.details = appError.details;
    res.status(HTTP_STATUS[appError.code]).json(body);
  };
}

/** POST/PUT/PATCH bodies must be JSON; anything else is refused before it is read. */
export const requireJson: RequestHandler = (req, _res, next) => {
  const hasBody = req.headers['content-length'] !== '0' && (req.headers['content-length'] || req.headers['transfer-encoding']);
  if (['POST', 'PUT', 'PATCH'].includes(req.method) && hasBody && !req.is('application/json')) {
    next(new AppError(ErrorCode.UnsupportedMediaType, 'the request body must be application/json'));
    return;
  }
  next();
};
