import { Context } from '@temporalio/activity';
import type { RunOutcome, RunSpec } from '../core/domain.js';
import type { ExecutionAdapter } from './execution/adapter.js';

/** Activities of a node worker (task queue `node-<id>`): it can only execute and clean up runs. */
export function createNodeActivities(deps: { adapter: ExecutionAdapter }) {
  return {
    async executeRun(spec: RunSpec): Promise<RunOutcome> {
      const ctx = Context.current();
      return deps.adapter.execute(spec, {
        signal: ctx.cancellationSignal,
        heartbeat: (details) => {
          ctx.heartbeat(details);
        },
        log: (message, fields) => {
          ctx.log.info(message, { runId: spec.runId, ...fields });
        },
      });
    },

    async cleanupRun(runId: string): Promise<void> {
      await deps.adapter.cleanup(runId);
    },
  };
}

export type NodeActivities = ReturnType<typeof createNodeActivities>;
