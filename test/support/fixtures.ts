import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { deploymentWorkflowId } from '../../workflows/messages.js';
import { eventually, images, type apiClient } from './system.js';

type Call = ReturnType<typeof apiClient>;

export const uniqueName = (prefix: string): string => `${prefix}-${randomBytes(4).toString('hex')}`;

/** The example template's parameters (infra/images/example-template/entrypoint.sh reads them as TF_VAR_*). */
export const EXAMPLE_PARAMETERS = [
  { name: 'message', type: 'string', required: true, description: 'printed and returned as an output' },
  { name: 'exit_code', type: 'integer', default: 0 },
  { name: 'sleep_seconds', type: 'integer', default: 0 },
];

export async function registerExampleTemplate(call: Call, overrides: Record<string, unknown> = {}): Promise<string> {
  const name = uniqueName('example');
  const created = await call('POST', '/v1/templates', { name, description: 'the example template' });
  if (created.status !== 201) throw new Error(`template not created: ${JSON.stringify(created.body)}`);
  const version = await call('POST', `/v1/templates/${name}/versions`, {
    image: images.example,
    tfVars: true,
    parameters: EXAMPLE_PARAMETERS,
    ...overrides,
  });
  if (version.status !== 201) throw new Error(`version not created: ${JSON.stringify(version.body)}`);
  return name;
}

export async function createDeployment(
  call: Call,
  template: string,
  parameters: Record<string, unknown>,
  target: Record<string, unknown>,
): Promise<string> {
  const res = await call<{ id: string }>('POST', '/v1/deployments', { template: { name: template }, parameters, target });
  if (res.status !== 201) throw new Error(`deployment not created: ${JSON.stringify(res.body)}`);
  return res.body.id;
}

/** A run as GET /v1/runs/{id} answers it (the fields tests look at). */
export interface RunBody {
  id: string;
  status: string;
  reason: string | null;
  exitCode: number | null;
  message: string | null;
  outputs: Record<string, unknown> | null;
  warnings: string[];
  stateVersion: number | null;
  stateVersionFrom: number | null;
}

/** Polls the API until the run has ended (succeeded, failed or cancelled), and answers it. */
export function waitForRun(call: Call, runId: string, timeoutMs = 120_000): Promise<RunBody> {
  return eventually(`run ${runId} to end`, async () => {
    const r = await call<RunBody>('GET', `/v1/runs/${runId}`);
    return ['succeeded', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined;
  }, timeoutMs);
}

/** Until the run's runner has restored its state and started the template (its phase, as the API tells it). */
export function waitForExecuting(call: Call, runId: string, timeoutMs = 120_000): Promise<true> {
  return eventually(`run ${runId} to execute`, async () => ((await call<{ phase: string | null }>('GET', `/v1/runs/${runId}`)).body.phase === 'executing' ? true : undefined), timeoutMs);
}

/** A template whose version runs `image` with one integer parameter, `mib` (TF_VAR_mib), and a `verify` action. */
export async function registerBlobTemplate(call: Call, prefix: string, image: string): Promise<string> {
  const name = uniqueName(prefix);
  const created = await call('POST', '/v1/templates', { name });
  if (created.status !== 201) throw new Error(`template not created: ${JSON.stringify(created.body)}`);
  const version = await call('POST', `/v1/templates/${name}/versions`, {
    image,
    tfVars: true,
    parameters: [{ name: 'mib', type: 'integer', required: true }],
    actions: ['deploy', 'destroy', 'verify'],
  });
  if (version.status !== 201) throw new Error(`version not created: ${JSON.stringify(version.body)}`);
  return name;
}

/** The attempt number of every executeRun a deployment's workflow started, in order (1 each: nothing retried). */
export async function executeRunAttempts(client: Client, deploymentId: string): Promise<number[]> {
  const history = await client.workflow.getHandle(deploymentWorkflowId(deploymentId)).fetchHistory();
  const scheduled = new Map<string, string>();
  const attempts: number[] = [];
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) scheduled.set(String(e.eventId), s.activityType?.name ?? '');
    const started = e.activityTaskStartedEventAttributes;
    if (started && scheduled.get(String(started.scheduledEventId)) === 'executeRun') attempts.push(started.attempt ?? 0);
  }
  return attempts;
}
