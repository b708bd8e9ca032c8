/**
 * `POST /v1/template-sources`: an author's .zip or .tgz, validated and normalized before anything is stored
 * (core/template-sources). Raw bodies, so it sits beside the JSON routes rather than among them.
 */
import express, { Router, type NextFunction, type Request, type Response } from 'express';
import type { Db } from '../../core/db/pool.js';
import { storeSource } from '../../core/db/template-sources.js';
import { AppError, ErrorCode } from '../../core/errors.js';
import { SourceRejectedError, normalizeUpload } from '../../core/template-sources/index.js';
import { authenticate, authorize } from '../http/auth.js';
import { AUTHORS } from '../http/roles.js';

const FORMATS: Record<string, 'zip' | 'tgz'> = { 'application/zip': 'zip', 'application/gzip': 'tgz', 'application/x-gzip': 'tgz' };
const formatOf = (req: Request): 'zip' | 'tgz' | undefined => FORMATS[(req.headers['content-type'] ?? '').split(';')[0]!.trim()];

export function sourceRouter(deps: { db: Db; uploadMaxBytes: number }): Router {
  const router = Router();
  router.post(
    '/v1/template-sources',
    (req: Request, _res: Response, next: NextFunction) => {
      // Who may upload is settled before a byte of the body is read.
      authenticate(deps.db, req)
        .then((principal) => {
          authorize(principal, AUTHORS, 'upload template sources');
          (req as Request & { principal?: typeof principal }).principal = principal;
        })
        .then(() => next(), next);
    },
    (req, _res, next) => {
      if (!formatOf(req)) {
        next(new AppError(ErrorCode.UnsupportedMediaType, 'send the archive as application/zip (.zip) or application/gzip (.tgz)'));
        return;
      }
      next();
    },
    express.raw({ type: Object.keys(FORMATS), limit: deps.uploadMaxBytes }),
    (req: Request & { principal?: { name: string } }, res, next) => {
      const format = formatOf(req)!;
      (async () => {
        let normalized;
        try {
          normalized = await normalizeUpload(format, req.body as Buffer, { maxUploadBytes: deps.uploadMaxBytes });
        } catch (err) {
          if (err instanceof SourceRejectedError) {
            throw new AppError(ErrorCode.SourceRejected, err.message, { reason: err.code, ...(err.entry ? { entry: err.entry } : {}) });
          }
          throw err;
        }
        const stored = await storeSource(deps.db, { format, ...normalized, createdBy: req.principal!.name });
        res.status(201).location(`/v1/template-sources/${stored.id}`).json(stored);
      })().catch(next);
    },
  );
  return router;
}
