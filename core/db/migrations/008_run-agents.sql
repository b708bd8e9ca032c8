-- Up Migration

-- A run executed by an agent inside its container (the pod-runner of a Kubernetes Job) calls back to the
-- API with a credential valid for that run only. Only its sha256 is kept; the runner's report lands here.
CREATE TABLE run_agents (
  run_id            text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
  deployment_id     text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
  credential_sha256 bytea NOT NULL,
  -- The state version the runner restores into /state before the template starts (none: first run).
  restore_version   integer,
  -- Set when the runner first calls in (fetching /state): from then on the template may have run.
  started_at        timestamptz,
  result            jsonb,
  result_at         timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now()
);

-- Down Migration
DROP TABLE run_agents;
