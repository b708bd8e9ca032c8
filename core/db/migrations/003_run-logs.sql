-- Up Migration

-- A run's stdout and stderr as they were produced, already masked by the node. Each stream is a byte
-- sequence; a chunk is the bytes at [start_offset, start_offset + length(data)) of its stream, so a
-- re-sent chunk (a retried activity re-reading the container's log) is recognised and not stored twice.
CREATE TABLE run_log_chunks (
  seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id       text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  stream       text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
  start_offset bigint NOT NULL CHECK (start_offset >= 0),
  at           timestamptz NOT NULL,
  data         bytea NOT NULL CHECK (length(data) > 0),
  UNIQUE (run_id, stream, start_offset)
);
CREATE INDEX run_log_chunks_run_idx ON run_log_chunks (run_id, seq);
-- Log text compresses well but is read in order, not searched: keep it out of line, uncompressed by TOAST.
ALTER TABLE run_log_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Down Migration
DROP TABLE run_log_chunks;
