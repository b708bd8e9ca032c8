import { appendLogChunk, storedLogLengths } from '../../core/db/logs.js';
import type { Db } from '../../core/db/pool.js';
import type { LogSink } from '../execution/logs.js';

/** The log sink of a node inside the cluster (the built-in node `local`): straight into Postgres. */
export class PostgresLogSink implements LogSink {
  constructor(private readonly db: Db) {}

  storedLengths(runId: string) {
    return storedLogLengths(this.db, runId);
  }

  append(chunk: Parameters<LogSink['append']>[0]) {
    return appendLogChunk(this.db, chunk);
  }
}
