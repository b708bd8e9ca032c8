-- Up Migration

-- A node is made by an admin (POST /v1/nodes), then enrols once with a one-time token: it sends its TLS
-- CSR and the X25519 key that run secrets are sealed to. The sealing key is pinned here; secrets are
-- sealed to this key only. Revocation is checked by the gateway on every call a node makes.
ALTER TABLE nodes
  ADD COLUMN labels jsonb NOT NULL DEFAULT '{}',
  ADD COLUMN status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'revoked')),
  ADD COLUMN sealing_public_key text,
  ADD COLUMN created_by text NOT NULL DEFAULT 'system',
  ADD COLUMN enrolled_at timestamptz,
  ADD COLUMN revoked_at timestamptz,
  ADD COLUMN revoked_by text,
  ADD COLUMN certificate_not_after timestamptz,
  ADD COLUMN last_seen_at timestamptz,
  ADD COLUMN version text,
  ADD COLUMN capacity integer CHECK (capacity IS NULL OR capacity >= 0),
  ADD CONSTRAINT nodes_active_has_key CHECK (status <> 'active' OR sealing_public_key IS NOT NULL);

CREATE TABLE node_enrolments (
  token_sha256 bytea PRIMARY KEY CHECK (length(token_sha256) = 32),
  node_id      gg_name NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
  created_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  used_at      timestamptz
);
CREATE INDEX node_enrolments_node ON node_enrolments (node_id);

-- When a target first took a run's grant: from then on its container may exist, so a node that goes away
-- is waited for (bounded by the run's own timeout) rather than the run failed while its template may go on.
ALTER TABLE runs ADD COLUMN granted_at timestamptz;

-- State a node sent for a run that had already ended (its node came back after the run was closed): kept,
-- never current, never dropped by retention, until an operator promotes it (a rollback to it) or purges.
ALTER TABLE state_versions ADD COLUMN quarantine text;

-- Down Migration
ALTER TABLE state_versions DROP COLUMN quarantine;
ALTER TABLE runs DROP COLUMN granted_at;
DROP TABLE node_enrolments;
ALTER TABLE nodes
  DROP CONSTRAINT nodes_active_has_key,
  DROP COLUMN capacity, DROP COLUMN version, DROP COLUMN last_seen_at, DROP COLUMN certificate_not_after,
  DROP COLUMN revoked_by, DROP COLUMN revoked_at, DROP COLUMN enrolled_at, DROP COLUMN created_by,
  DROP COLUMN sealing_public_key, DROP COLUMN status, DROP COLUMN labels;
