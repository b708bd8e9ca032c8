-- Up Migration

-- Fencing: every attempt to write a version claims it with a fresh `writer` token, and a chunk is stored
-- only while its writer still holds the version (the insert takes the version row FOR SHARE, so a newer
-- claim waits for inserts in flight, then deletes them). An attempt that was superseded cannot add a byte.
-- `digest` is the sha256 of the stored (sealed) chunk, written with it; `chunks_sha256` is the sha256 of
-- all digests in order. A version is completed only when what is stored hashes to what its writer sent.
ALTER TABLE state_versions
  ADD COLUMN writer uuid,
  ADD COLUMN chunks_sha256 bytea CHECK (chunks_sha256 IS NULL OR length(chunks_sha256) = 32);
ALTER TABLE state_chunks ADD COLUMN digest bytea CHECK (digest IS NULL OR length(digest) = 32);

-- The largest state archive a deployment may store, MiB; NULL inherits (deployment → template version →
-- installation default).
ALTER TABLE template_versions ADD COLUMN state_max_mb integer CHECK (state_max_mb > 0);
ALTER TABLE deployments ADD COLUMN state_max_mb integer CHECK (state_max_mb > 0);

-- What the agent API refused about a run's state (corrupt version to restore, archive over the limit), so
-- the adapter can end the run with that reason whatever the runner manages to report.
ALTER TABLE run_agents ADD COLUMN state_failure jsonb;

-- Down Migration
ALTER TABLE run_agents DROP COLUMN state_failure;
ALTER TABLE deployments DROP COLUMN state_max_mb;
ALTER TABLE template_versions DROP COLUMN state_max_mb;
ALTER TABLE state_chunks DROP COLUMN digest;
ALTER TABLE state_versions DROP COLUMN writer, DROP COLUMN chunks_sha256;
