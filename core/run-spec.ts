import type { Config } from './config.js';
import type { Deployment } from './db/deployments.js';
import type { Queryable } from './db/pool.js';
import type { Run } from './db/runs.js';
import { getTemplateVersion } from './db/templates.js';
import { CONTRACT_VERSION, effectiveLimits, type RunSpec } from './domain.js';
import { AppError, ErrorCode } from './errors.js';

/** Terraform reads TF_VAR_x as a string, or as HCL/JSON for numbers, booleans and collections. */
function tfVarValue(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/**
 * What a run executes, from the database alone: the cluster worker hands it to the Kubernetes adapter, and a
 * node fetches it through the gateway as the run's grant (never from a task's input, which it cannot trust).
 */
export async function buildRunSpec(db: Queryable, run: Run, deployment: Deployment, runs: Config['runs'], opts: { cancelNow: boolean }): Promise<RunSpec> {
  const version = await getTemplateVersion(db, deployment.template.name, deployment.template.version);
  if (!version) {
    throw new AppError(ErrorCode.TemplateVersionNotFound, `template version '${deployment.template.name}@${deployment.template.version}' not found`);
  }
  const sensitive = new Set(version.parameters.filter((p) => p.sensitive).map((p) => p.name));
  // Values the template fixed for its type's parameters come first; deployments cannot set those.
  const parameters = {
    ...(version.origin?.fixedParameters ?? {}),
    ...Object.fromEntries(Object.entries(deployment.parameters).filter(([k]) => !sensitive.has(k))),
  };
  const env: Record<string, string> = {
    GLIDERGUN_CONTRACT_VERSION: CONTRACT_VERSION,
    GLIDERGUN_ACTION: run.action,
    GLIDERGUN_DEPLOYMENT_ID: deployment.id,
    GLIDERGUN_RUN_ID: run.id,
  };
  if (version.tfVars) {
    for (const [name, value] of Object.entries(parameters)) env[`TF_VAR_${name}`] = tfVarValue(value);
  }
  return {
    runId: run.id,
    deploymentId: deployment.id,
    action: run.action,
    image: version.image,
    parameters,
    env,
    restoreStateVersion: run.stateVersionFrom ?? undefined,
    ...(version.origin?.adhoc ? { templateFiles: { sourceId: version.origin.source.sourceId, sha256: version.origin.source.sha256 } } : {}),
    ...effectiveLimits(deployment.limits, version.limits, runs),
    stopGraceSeconds: runs.stopGraceSeconds,
    logMaxBytes: runs.logMaxBytes,
    ...(opts.cancelNow ? { cancelNow: true } : {}),
  };
}
