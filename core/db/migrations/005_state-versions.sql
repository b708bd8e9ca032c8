-- Up Migration

-- Each run's /state, archived whatever the outcome: an immutable, numbered, checksummed version.
-- The archive (tar + gzip) is stored as chunks, each encrypted on its own (AES-256-GCM, bound to its
-- deployment, version and index), so it is written and read as a stream and never held whole in memory.
CREATE TABLE state_versions (
  deployment_id text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
  version       integer NOT NULL CHECK (version > 0),
  run_id        text UNIQUE REFERENCES runs (id) ON DELETE SET NULL,
  status        text NOT NULL CHECK (status IN ('writing', 'complete')),
  sha256        bytea CHECK (sha256 IS NULL OR length(sha256) = 32),
  size_bytes    bigint,
  chunk_count   integer,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (deployment_id, version),
  CHECK ((status = 'complete') = (sha256 IS NOT NULL AND size_bytes IS NOT NULL AND chunk_count IS NOT NULL))
);

CREATE TABLE state_chunks (
  deployment_id text NOT NULL,
  version       integer NOT NULL,
  idx           integer NOT NULL CHECK (idx >= 0),
  data          bytea NOT NULL,
  PRIMARY KEY (deployment_id, version, idx),
  FOREIGN KEY (deployment_id, version) REFERENCES state_versions (deployment_id, version) ON DELETE CASCADE
);
-- Encrypted data does not compress: keep it out of line without TOAST compression.
ALTER TABLE state_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

ALTER TABLE deployments ADD COLUMN current_state_version integer;
ALTER TABLE runs ADD COLUMN state_version_from integer, ADD COLUMN state_version integer;

-- Down Migration
ALTER TABLE runs DROP COLUMN state_version_from, DROP COLUMN state_version;
ALTER TABLE deployments DROP COLUMN current_state_version;
DROP TABLE state_chunks;
DROP TABLE state_versions;
