import { z } from 'zod';
import { sha256 } from '../../core/crypto.js';
import type { AgentResult, AgentStateFailure } from '../../core/db/run-agents.js';
import { UNREADABLE_STATE_REASONS } from '../../core/domain.js';
import type { RunAgents } from '../execution/outcome.js';

/** The node API's calls this needs (workers/node-api.ts NodeApi): a node has no database. */
export interface NodeRunsApi {
  grantAgent(runId: string, credentialSha256: string): Promise<void>;
  runReport(runId: string): Promise<unknown>;
}

const Report = z.object({
  started: z.boolean(),
  archiving: z.boolean(),
  result: z
    .object({
      exitCode: z.number().int(),
      signal: z.string().optional(),
      stopped: z.boolean(),
      outputs: z.record(z.string(), z.unknown()).optional(),
      warnings: z.array(z.string()),
      stateVersion: z.number().int().optional(),
    })
    .nullish(),
  stateFailure: z.object({ reason: z.enum([...UNREADABLE_STATE_REASONS, 'state-too-large']), message: z.string() }).nullish(),
});
type Report = z.infer<typeof Report>;

/**
 * What runners told the agent API, as a remote node reads it: through the node API (`GET
 * /v1/node/runs/{id}/report`). The credential its relay presents is registered by its hash only
 * (`PUT /v1/node/runs/{id}/agent`): the credential itself never leaves the node.
 */
export function nodeApiRunAgents(api: NodeRunsApi): RunAgents {
  const report = async (runId: string): Promise<Report> => {
    const parsed = Report.safeParse(await api.runReport(runId));
    if (!parsed.success) {
      throw new Error(`the report of run ${runId} is not what the node API promises: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`);
    }
    return parsed.data;
  };
  return {
    grant: (g) => api.grantAgent(g.runId, sha256(g.credential).toString('base64')),
    started: async (runId) => (await report(runId)).started,
    archiving: async (runId) => (await report(runId)).archiving,
    result: async (runId): Promise<AgentResult | undefined> => (await report(runId)).result ?? undefined,
    stateFailure: async (runId): Promise<AgentStateFailure | undefined> => (await report(runId)).stateFailure ?? undefined,
  };
}
