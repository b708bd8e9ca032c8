import { getStateVersion, listStateVersions, readStateVersion, rollbackStateVersion, verifyStateVersion } from '../../core/db/state.js';
import { AppError, ErrorCode, notFound } from '../../core/errors.js';
import type { ApiDeps } from '../deps.js';
import { defineRoute, type AnyRoute } from '../http/route.js';
import { DeploymentId, DeploymentParams, VersionNumber } from '../schemas.js';
import { z } from '../zod.js';
import { OPERATORS, READERS } from '../http/roles.js';
import { send } from '../http/streaming.js';
import { loadDeployment } from './deployments.js';

const StateVersionSchema = z
  .object({
    deploymentId: DeploymentId,
    version: z.number().int(),
    runId: z.string().nullable(),
    sha256: z.string().openapi({ description: 'of the tar.gz archive' }),
    sizeBytes: z.number().int(),
    createdAt: z.string(),
    quarantine: z.string().nullable().openapi({
      description: 'set when the version was set apart: its node sent it after its run had ended. It never becomes current by itself; promote it with a rollback to it.',
    }),
  })
  .openapi('StateVersion');

const StateVersionParams = z.object({ id: DeploymentId, version: VersionNumber });

export function stateRoutes(deps: Pick<ApiDeps, 'db' | 'secrets' | 'state'>): AnyRoute[] {
  const { db } = deps;
  return [
    defineRoute({
      method: 'get',
      path: '/v1/deployments/{id}/state-versions',
      operationId: 'listStateVersions',
      summary: "List a deployment's state versions, newest first",
      tag: 'state',
      roles: READERS,
      params: DeploymentParams,
      responses: { 200: { description: 'the versions', schema: z.object({ items: z.array(StateVersionSchema) }) } },
      errors: [ErrorCode.DeploymentNotFound],
      async handler({ params }) {
        await loadDeployment(db, params.id);
        return { status: 200, body: { items: await listStateVersions(db, params.id) } };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/deployments/{id}/state-versions/{version}/rollback',
      operationId: 'rollbackState',
      summary: 'Make a new state version equal to an earlier one; the next run starts from it',
      description: 'Also promotes a quarantined version (state a node sent after its run had ended): the new version has its content and is current.',
      tag: 'state',
      roles: OPERATORS,
      params: StateVersionParams,
      responses: { 201: { description: 'the new version', schema: StateVersionSchema } },
      errors: [ErrorCode.DeploymentNotFound, ErrorCode.StateVersionNotFound, ErrorCode.RunInProgress, ErrorCode.StateCorrupt],
      async handler({ params }) {
        await loadDeployment(db, params.id);
        const result = await rollbackStateVersion(db, deps.secrets, params.id, params.version, deps.state.versionsKept);
        if (result === 'not-found') throw notFound(ErrorCode.StateVersionNotFound, 'state version', `${params.id}@${params.version}`);
        if (result === 'run-active') {
          throw new AppError(ErrorCode.RunInProgress, `deployment '${params.id}' has an active run; roll back when it has ended`, { deploymentId: params.id });
        }
        return { status: 201, body: result };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/deployments/{id}/state-versions/{version}/archive',
      operationId: 'downloadStateVersion',
      summary: 'Download a state version as the tar.gz the run left in /state (decrypted)',
      description: 'State often holds secrets (a terraform.tfstate does), so only operators and admins may read it.',
      tag: 'state',
      roles: OPERATORS,
      params: StateVersionParams,
      responses: { 200: { description: 'the archive; X-Checksum-Sha256 is its sha256', schema: z.string(), contentType: 'application/gzip' } },
      errors: [ErrorCode.DeploymentNotFound, ErrorCode.StateVersionNotFound, ErrorCode.StateCorrupt, ErrorCode.StateKeyMismatch],
      async handler({ params, res }) {
        await loadDeployment(db, params.id);
        const meta = await getStateVersion(db, params.id, params.version);
        if (!meta) throw notFound(ErrorCode.StateVersionNotFound, 'state version', `${params.id}@${params.version}`);
        // Every chunk is checked before the first byte: a damaged version is an error, never a short 200.
        await verifyStateVersion(db, params.id, params.version, { deep: true });
        // So is a first chunk that does not open (moved from elsewhere, or sealed under another key): it is
        // opened before the status is sent. A later chunk that fails, or the final checksum, cuts the download.
        const reader = readStateVersion(db, deps.secrets, params.id, params.version)[Symbol.asyncIterator]();
        let next = await reader.next();
        res.status(200).type('application/gzip');
        res.setHeader('content-length', String(meta.sizeBytes));
        res.setHeader('x-checksum-sha256', meta.sha256);
        res.setHeader('content-disposition', `attachment; filename="${params.id}-state-${params.version}.tar.gz"`);
        try {
          while (!next.done) {
            if (!(await send(res, next.value))) {
              await reader.return(undefined); // the client has gone: closes the reader
              return undefined;
            }
            next = await reader.next();
          }
          res.end();
        } catch (err) {
          // Headers are gone: cut the connection so the client sees a broken download, not a short one.
          res.destroy(err instanceof Error ? err : new Error(String(err)));
        }
        return undefined;
      },
    }),
  ];
}
