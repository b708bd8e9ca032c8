import { readLogChunks, type LogStream } from '../../core/db/logs.js';
import { getRun, insertRun, listRuns, requestRunCancel } from '../../core/db/runs.js';
import { getTemplateVersion } from '../../core/db/templates.js';
import { AppError, ErrorCode, notFound } from '../../core/errors.js';
import { newId } from '../../core/ids.js';
import { ACTIVE_RUN_STATUSES } from '../../core/domain.js';
import type { Response } from 'express';
import type { ApiDeps } from '../deps.js';
import { dispatchRun, signalCancel } from '../dispatch.js';
import { defineRoute, type AnyRoute } from '../http/route.js';
import { CreateRunBody, CursorPage, DeploymentParams, ListRunsQuery, LogQuery, RunParams, RunSchema, encodeCursor } from '../schemas.js';
import { z } from '../zod.js';
import { OPERATORS, READERS } from '../http/roles.js';
import { gone, pause, send } from '../http/streaming.js';
import { toAppError } from '../errors.js';
import { cursorOrThrow, loadDeployment } from './deployments.js';

const FOLLOW_POLL_MS = 250;
const KEEPALIVE_MS = 15_000;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Server-Sent Events of a run's log chunks until the run has ended and every chunk has been sent. Stops as
 * soon as the client goes away. Once the stream is open a failure can no longer be an HTTP status: the
 * follower gets an `error` event (it may reconnect with Last-Event-ID), and the failure goes on to the
 * error handler to be logged.
 */
async function followLog(
  db: ApiDeps['db'],
  runId: string,
  opts: { stream?: LogStream | undefined; after: number },
  res: Response,
): Promise<void> {
  res.status(200).set({ 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  res.flushHeaders();
  let after = opts.after;
  let lastWrite = Date.now();
  try {
    while (!gone(res)) {
      // Read the status first: once a run has ended its log is complete, so one more read sends the rest.
      const run = await getRun(db, runId);
      const ended = !run || !(ACTIVE_RUN_STATUSES as readonly string[]).includes(run.status);
      for (;;) {
        const chunks = await readLogChunks(db, runId, { afterSeq: after, limit: 200, stream: opts.stream });
        for (const c of chunks) {
          let text: string | undefined;
          try {
            text = utf8.decode(c.data);
          } catch {
            text = undefined;
          }
          const event = { seq: c.seq, stream: c.stream, offset: c.offset, at: c.at, ...(text !== undefined ? { text } : { base64: c.data.toString('base64') }) };
          if (!(await send(res, `event: log\nid: ${c.seq}\ndata: ${JSON.stringify(event)}\n\n`))) return;
          after = c.seq;
          lastWrite = Date.now();
        }
        if (chunks.length < 200) break;
      }
      if (ended) {
        await send(res, `event: end\ndata: ${JSON.stringify({ status: run?.status ?? 'unknown', reason: run?.reason ?? null })}\n\n`);
        res.end();
        return;
      }
      if (Date.now() - lastWrite > KEEPALIVE_MS) {
        if (!(await send(res, ': keep-alive\n\n'))) return;
        lastWrite = Date.now();
      }
      await pause(res, FOLLOW_POLL_MS);
    }
  } catch (err) {
    if (!gone(res)) {
      const { code, message } = toAppError(err);
      res.end(`event: error\ndata: ${JSON.stringify({ code, message, lastEventId: after })}\n\n`);
    }
    throw err;
  }
}

export function runRoutes(deps: ApiDeps): AnyRoute[] {
  const { db } = deps;
  return [
    defineRoute({
      method: 'post',
      path: '/v1/deployments/{id}/runs',
      operationId: 'startRun',
      summary: 'Start a run of a deployment',
      description:
        'Accepted only when the deployment has no active run (Postgres enforces it); the run is then handed to the deployment\'s workflow. Answers 202 with the pending run.',
      tag: 'runs',
      roles: OPERATORS,
      params: DeploymentParams,
      body: CreateRunBody,
      idempotent: true,
      responses: { 202: { description: 'accepted, pending', schema: RunSchema } },
      errors: [
        ErrorCode.DeploymentNotFound,
        ErrorCode.UnknownAction,
        ErrorCode.RunInProgress,
        ErrorCode.Throttled,
        ErrorCode.DependencyUnavailable,
        ErrorCode.IdempotencyKeyReused,
        ErrorCode.IdempotencyKeyInUse,
      ],
      async handler({ params, body, principal }) {
        const deployment = await loadDeployment(db, params.id);
        const version = await getTemplateVersion(db, deployment.template.name, deployment.template.version);
        if (!version?.actions.includes(body.action)) {
          throw new AppError(
            ErrorCode.UnknownAction,
            `${deployment.template.name}@${deployment.template.version} has no action '${body.action}'; it supports: ${version?.actions.join(', ')}`,
            { action: body.action, supported: version?.actions ?? [] },
          );
        }
        const run = await insertRun(db, { id: newId('run'), deploymentId: deployment.id, action: body.action, requestedBy: principal!.name });
        return { status: 202, headers: { location: `/v1/runs/${run.id}` }, body: await dispatchRun(deps, { ...deployment, status: 'pending' }, run) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/deployments/{id}/runs',
      operationId: 'listRuns',
      summary: 'List the runs of a deployment, newest first',
      tag: 'runs',
      roles: READERS,
      params: DeploymentParams,
      query: ListRunsQuery,
      responses: { 200: { description: 'a page', schema: CursorPage(RunSchema, 'RunPage') } },
      errors: [ErrorCode.DeploymentNotFound],
      async handler({ params, query }) {
        const deployment = await loadDeployment(db, params.id);
        const page = await listRuns(db, deployment.id, { limit: query.limit, beforeSeq: cursorOrThrow(query.cursor) });
        return { status: 200, body: { items: page.items, nextCursor: encodeCursor(page.nextSeq) } };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/runs/{id}/cancel',
      operationId: 'cancelRun',
      summary: 'Cancel a pending or running run',
      description:
        'Marks the run `cancelling`, records who asked, and tells the deployment\'s workflow. A pending run never starts; a running one gets SIGTERM on its whole process tree, then SIGKILL after the grace period, and ends `cancelled`. Asking again is harmless.',
      tag: 'runs',
      roles: OPERATORS,
      params: RunParams,
      responses: { 202: { description: 'cancelling', schema: RunSchema } },
      errors: [ErrorCode.RunNotFound, ErrorCode.RunNotActive, ErrorCode.Throttled, ErrorCode.DependencyUnavailable],
      async handler({ params, principal }) {
        const run = await getRun(db, params.id);
        if (!run) throw notFound(ErrorCode.RunNotFound, 'run', params.id);
        const cancelling = await requestRunCancel(db, run.id, principal!.name);
        if (!cancelling) {
          const ended = await getRun(db, run.id);
          throw new AppError(ErrorCode.RunNotActive, `run '${run.id}' has already ended (${ended?.status})`, { runId: run.id, status: ended?.status });
        }
        await signalCancel(deps.temporal, run.deploymentId, run.id, principal!.name);
        return { status: 202, body: cancelling };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/runs/{id}/logs',
      operationId: 'getRunLogs',
      summary: "Download or follow a run's log (stdout and stderr as produced, sensitive values masked)",
      description:
        'Plain text in the order the chunks were stored; `stream` selects one stream. With `follow=true`, Server-Sent Events: each `log` event (id = its sequence number) carries `{seq, stream, offset, at, text}` (or `base64` instead of `text` for bytes that are not UTF-8), from `from` or `Last-Event-ID` on, and an `end` event with the run\'s final status closes the stream. If the log cannot be read any more (the database went away), an `error` event `{code, message, lastEventId}` closes it instead: reconnect with `Last-Event-ID`.',
      tag: 'runs',
      roles: READERS,
      params: RunParams,
      query: LogQuery,
      responses: { 200: { description: 'the log (text/plain), or with follow=true an event stream (text/event-stream)', schema: z.string(), contentType: 'text/plain' } },
      errors: [ErrorCode.RunNotFound],
      async handler({ params, query, req, res }) {
        if (!(await getRun(db, params.id))) throw notFound(ErrorCode.RunNotFound, 'run', params.id);
        if (query.follow) {
          const lastEventId = Number(req.get('last-event-id'));
          await followLog(db, params.id, { stream: query.stream, after: Number.isInteger(lastEventId) && lastEventId > 0 ? lastEventId : (query.from ?? 0) }, res);
          return undefined;
        }
        res.status(200).type('text/plain; charset=utf-8');
        let after = 0;
        for (;;) {
          const chunks = await readLogChunks(db, params.id, { afterSeq: after, limit: 200, stream: query.stream });
          for (const c of chunks) {
            if (!(await send(res, c.data))) return undefined; // the client has gone
          }
          if (chunks.length < 200) break;
          after = chunks[chunks.length - 1]!.seq;
        }
        res.end();
        return undefined;
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/runs/{id}',
      operationId: 'getRun',
      summary: 'Read a run',
      tag: 'runs',
      roles: READERS,
      params: RunParams,
      responses: { 200: { description: 'the run', schema: RunSchema } },
      errors: [ErrorCode.RunNotFound],
      async handler({ params }) {
        const run = await getRun(db, params.id);
        if (!run) throw notFound(ErrorCode.RunNotFound, 'run', params.id);
        return { status: 200, body: run };
      },
    }),
  ];
}
