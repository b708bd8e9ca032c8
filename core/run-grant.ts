import type { Config } from './config.js';
import { sealForNode, type SealedForNode, type SecretBox } from './crypto.js';
import { getDeployment, getSealedSecrets } from './db/deployments.js';
import type { Queryable } from './db/pool.js';
import { getRun } from './db/runs.js';
import type { RunSpec } from './domain.js';
import { AppError, ErrorCode } from './errors.js';
import { buildRunSpec } from './run-spec.js';

export interface RunGrant {
  spec: RunSpec;
  /** The deployment's sensitive values, sealed to the executing target's key: only it can open them. */
  secrets?: SealedForNode;
}

/**
 * What a target executes for a run that has started, from the database alone: the node API answers a node
 * with it (api/node/routes.ts), and the cluster worker builds it for its own Kubernetes runs.
 */
export async function runGrant(db: Queryable, box: SecretBox, runs: Config['runs'], runId: string, sealingPublicKey: string | null): Promise<RunGrant> {
  const run = await getRun(db, runId);
  const deployment = run && (await getDeployment(db, run.deploymentId));
  if (!run || !deployment || run.startedAt === null) throw new AppError(ErrorCode.RunNotActive, `run '${runId}' has not started`);
  const spec = await buildRunSpec(db, run, deployment, runs, { cancelNow: run.status === 'cancelling' });
  await db.query(`UPDATE runs SET granted_at = coalesce(granted_at, now()) WHERE id = $1`, [runId]);
  if (deployment.sensitiveParameters.length === 0) return { spec };
  if (!sealingPublicKey) throw new AppError(ErrorCode.NodeRevoked, `the target of run '${runId}' has no sealing key`);
  const sealed = await getSealedSecrets(db, deployment.id);
  return { spec, secrets: sealForNode(sealingPublicKey, sealed ? box.open(sealed, deployment.id) : Buffer.from('{}')) };
}
