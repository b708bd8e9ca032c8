import type { RunSpec } from '../../core/domain.js';

/**
 * What every run container gets, whatever the target: the runner (infra/images/pod-runner) wraps the
 * template's entrypoint and is configured by these variables and files (its README.md).
 */

/** Where the runner is in a run's container: copied there by an init container in a pod, bind-mounted on Docker. */
export const RUNNER_DIR = '/gg';
export const RUNNER_PATH = `${RUNNER_DIR}/pod-runner`;
/** In the runner's folder (/var/run/glider-gun): the parameters it writes into /state before the template starts. */
export const PARAMETERS_FILE = 'template-parameters.json';
/** In /secrets: the sensitive values, for the template to read and the runner to mask. */
export const SECRETS_FILE = 'template-secrets.json';
/** Time the runner gets after the template's grace period to archive /state and report. */
export const ARCHIVE_GRACE_SECONDS = 300;

/** The runner's own variables (GG_*; the template does not see them). */
export function runnerEnv(spec: RunSpec, agentUrl: string): Record<string, string> {
  return {
    GG_AGENT_URL: agentUrl,
    GG_RUN_ID: spec.runId,
    GG_STOP_GRACE_SECONDS: String(spec.stopGraceSeconds),
    GG_LOG_MAX_BYTES: String(spec.logMaxBytes ?? 0),
    // Always: the runner's first call (204 when there is nothing to restore) is also what tells a retried
    // attempt that the template may have started.
    GG_RESTORE: '1',
    ...(spec.templateFiles ? { GG_TEMPLATE_FILES: '1' } : {}),
  };
}
