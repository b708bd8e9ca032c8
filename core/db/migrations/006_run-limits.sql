-- Up Migration

-- Per template version and per deployment: the run timeout and the container's CPU and memory limits.
-- NULL means "inherit" (deployment → template version → installation default).
ALTER TABLE template_versions
  ADD COLUMN timeout_seconds integer CHECK (timeout_seconds > 0),
  ADD COLUMN cpus numeric(6, 3) CHECK (cpus > 0),
  ADD COLUMN memory_mb integer CHECK (memory_mb >= 6);
ALTER TABLE deployments
  ADD COLUMN timeout_seconds integer CHECK (timeout_seconds > 0),
  ADD COLUMN cpus numeric(6, 3) CHECK (cpus > 0),
  ADD COLUMN memory_mb integer CHECK (memory_mb >= 6);

-- Down Migration
ALTER TABLE deployments DROP COLUMN timeout_seconds, DROP COLUMN cpus, DROP COLUMN memory_mb;
ALTER TABLE template_versions DROP COLUMN timeout_seconds, DROP COLUMN cpus, DROP COLUMN memory_mb;
