-- Up Migration

-- Names and ids double as Kubernetes and Docker names (core/ids.ts), so the database checks them too.
CREATE DOMAIN gg_name AS text CHECK (VALUE ~ '^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$');

CREATE TABLE templates (
  name        gg_name PRIMARY KEY,
  description text NOT NULL DEFAULT '',
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- A version is immutable: nothing updates these rows; a change is a new version.
CREATE TABLE template_versions (
  template_name gg_name NOT NULL REFERENCES templates (name) ON DELETE RESTRICT,
  version       integer NOT NULL CHECK (version > 0),
  image         text NOT NULL CHECK (length(image) BETWEEN 1 AND 512),
  parameters    jsonb NOT NULL DEFAULT '[]',
  actions       text[] NOT NULL CHECK (cardinality(actions) > 0),
  tf_vars       boolean NOT NULL DEFAULT false,
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (template_name, version)
);

CREATE TABLE nodes (
  id          gg_name PRIMARY KEY,
  description text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now()
);
-- The node on the machine running Glider Gun, so Docker targets work before any remote node is enrolled.
INSERT INTO nodes (id, description) VALUES ('local', 'Docker engine on the machine running Glider Gun');

CREATE TABLE deployments (
  id               text PRIMARY KEY CHECK (id ~ '^dep-[a-z0-9]{12}$'),
  -- Creation order for stable pagination (timestamps can tie, ids are random).
  seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  name             text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
  template_name    gg_name NOT NULL,
  template_version integer NOT NULL,
  parameters       jsonb NOT NULL DEFAULT '{}',
  target_kind      text NOT NULL CHECK (target_kind IN ('cluster', 'node')),
  target_node      gg_name REFERENCES nodes (id),
  status           text NOT NULL DEFAULT 'new'
                   CHECK (status IN ('new', 'pending', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled', 'destroyed')),
  last_run_id      text,
  -- The outputs of the last successful run (what /state/outputs.json said).
  outputs          jsonb NOT NULL DEFAULT '{}',
  created_by       text NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (template_name, template_version) REFERENCES template_versions (template_name, version),
  CHECK ((target_kind = 'node') = (target_node IS NOT NULL))
);
CREATE INDEX deployments_status_idx ON deployments (status, seq);
CREATE INDEX deployments_template_idx ON deployments (template_name, seq);

CREATE TABLE runs (
  id            text PRIMARY KEY CHECK (id ~ '^run-[a-z0-9]{12}$'),
  seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  deployment_id text NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
  action        text NOT NULL,
  status        text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled')),
  phase         text CHECK (phase IN ('preparing', 'restoring', 'executing', 'archiving')),
  reason        text,
  message       text,
  exit_code     integer,
  outputs       jsonb,
  warnings      jsonb NOT NULL DEFAULT '[]',
  requested_by  text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  started_at    timestamptz,
  finished_at   timestamptz,
  CHECK ((status = 'failed') = (reason IS NOT NULL)),
  CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
CREATE INDEX runs_deployment_idx ON runs (deployment_id, seq);

-- Principle 1: whatever races in the code, a deployment has at most one active run.
CREATE UNIQUE INDEX runs_one_active_per_deployment ON runs (deployment_id)
  WHERE status IN ('pending', 'running', 'cancelling');

ALTER TABLE deployments ADD CONSTRAINT deployments_last_run_fk
  FOREIGN KEY (last_run_id) REFERENCES runs (id) DEFERRABLE INITIALLY DEFERRED;

-- Down Migration
DROP TABLE runs CASCADE;
DROP TABLE deployments CASCADE;
DROP TABLE nodes;
DROP TABLE template_versions;
DROP TABLE templates;
DROP DOMAIN gg_name;
