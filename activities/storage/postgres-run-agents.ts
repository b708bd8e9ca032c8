import type { Db } from '../../core/db/pool.js';
import { getAgentResult, getAgentStateFailure, grantRunAgent, runAgentStarted } from '../../core/db/run-agents.js';
import { getRun } from '../../core/db/runs.js';
import type { RunAgents } from '../execution/outcome.js';

/** What runners told the agent API, as the adapters of both targets read it. */
export function postgresRunAgents(db: Db): RunAgents {
  return {
    grant: (g) => grantRunAgent(db, g),
    started: (runId) => runAgentStarted(db, runId),
    result: (runId) => getAgentResult(db, runId),
    stateFailure: (runId) => getAgentStateFailure(db, runId),
    archiving: async (runId) => (await getRun(db, runId))?.phase === 'archiving',
  };
}
