import { ApplicationFailure } from '@temporalio/common';
import type { Config } from '../core/config.js';
import { sealForNode, type SecretBox } from '../core/crypto.js';
import { getDeployment, getSealedSecrets, type Deployment } from '../core/db/deployments.js';
import type { Db } from '../core/db/pool.js';
import * as runs from '../core/db/runs.js';
import { buildRunSpec } from '../core/run-spec.js';
import { AppError, ErrorCode } from '../core/errors.js';
import {
  RunFailure,
  type DeploymentStatus,
  type RunOutcome,
  type RunPhase,
  type RunSpec,
  type RunSummary,
} from '../core/domain.js';

export interface RunTransition {
  run: RunSummary;
  /** The deployment's status as Postgres now records it; the workflow reports exactly this. */
  deploymentStatus: DeploymentStatus;
}

export interface StartedRun extends RunTransition {
  /** Present only when the run really moved to `running` (not when it had already ended). */
  spec?: RunSpec | undefined;
  /** Whether the deployment has sensitive values to deliver (then the node's key is fetched to seal them). */
  hasSecrets: boolean;
  nodeWaitSeconds: number;
}

/** Thrown for facts that retrying cannot change, e.g. a run id the database does not know. */
const missing = (what: string, id: string) =>
  ApplicationFailure.create({ type: RunFailure.Infrastructure, message: `${what} '${id}' not found`, nonRetryable: true });

/** Database transitions of a run, run by the cluster worker. Each is idempotent (see core/db/runs.ts). */
export function createRunActivities(deps: { db: Db; runs: Config['runs']; secrets: SecretBox }) {
  const { db } = deps;

  async function transition(run: runs.Run | undefined, runId: string, loaded?: Deployment): Promise<RunTransition> {
    if (!run) throw missing('run', runId);
    const deployment = loaded ?? (await getDeployment(db, run.deploymentId));
    if (!deployment) throw missing('deployment', run.deploymentId);
    return { run: runs.runSummary(run), deploymentStatus: deployment.status };
  }

  return {
    async startRun(runId: string): Promise<StartedRun> {
      const run = await runs.markRunStarted(db, runId);
      const deployment = run && (await getDeployment(db, run.deploymentId));
      const base = {
        ...(await transition(run, runId, deployment)),
        hasSecrets: (deployment?.sensitiveParameters.length ?? 0) > 0,
        nodeWaitSeconds: deps.runs.nodeWaitSeconds,
      };
      // A run already started and being cancelled is resumed only to stop it (its workflow was replaced).
      const resumingCancel = run?.status === 'cancelling' && run.startedAt !== null;
      if (!run || !deployment || (run.status !== 'running' && !resumingCancel)) return base;
      try {
        return { ...base, spec: await buildRunSpec(db, run, deployment, deps.runs, { cancelNow: resumingCancel }) };
      } catch (err) {
        if (err instanceof AppError && err.code === ErrorCode.TemplateVersionNotFound) throw missing('template version', `${deployment.template.name}@${deployment.template.version}`);
        throw err;
      }
    },

    /**
     * Decrypts the deployment's sensitive values and seals them to the executing node's public key, so they
     * cross Temporal only as ciphertext that node alone can open.
     */
    async sealRunSecrets(runId: string, nodePublicKey: string): Promise<NonNullable<RunSpec['secrets']>> {
      const run = await runs.getRun(db, runId);
      if (!run) throw missing('run', runId);
      const sealed = await getSealedSecrets(db, run.deploymentId);
      const plaintext = sealed ? deps.secrets.open(sealed, run.deploymentId) : Buffer.from('{}');
      return sealForNode(nodePublicKey, plaintext);
    },

    /** Whether the run's target took its grant: its container may exist, whatever became of the target since. */
    async runGranted(runId: string): Promise<boolean> {
      const { rows } = await db.query('SELECT 1 FROM runs WHERE id = $1 AND granted_at IS NOT NULL', [runId]);
      return rows.length > 0;
    },

    async setRunPhase(runId: string, phase: RunPhase): Promise<RunTransition> {
      return transition(await runs.setRunPhase(db, runId, phase), runId);
    },

    async finishRun(runId: string, outcome: RunOutcome): Promise<RunTransition> {
      return transition(await runs.finishRun(db, runId, outcome), runId);
    },
  };
}

export type RunActivities = ReturnType<typeof createRunActivities>;
