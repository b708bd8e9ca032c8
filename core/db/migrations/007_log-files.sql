-- Up Migration

-- Files a template writes in /logs are stored beside stdout and stderr, as streams named `file:<name>`.
ALTER TABLE run_log_chunks DROP CONSTRAINT run_log_chunks_stream_check;
ALTER TABLE run_log_chunks ADD CONSTRAINT run_log_chunks_stream_check
  CHECK (stream IN ('stdout', 'stderr') OR stream ~ '^file:[!-~][ -~]{0,199}$');

-- Down Migration
DELETE FROM run_log_chunks WHERE stream NOT IN ('stdout', 'stderr');
ALTER TABLE run_log_chunks DROP CONSTRAINT run_log_chunks_stream_check;
ALTER TABLE run_log_chunks ADD CONSTRAINT run_log_chunks_stream_check CHECK (stream IN ('stdout', 'stderr'));
