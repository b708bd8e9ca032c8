-- Up Migration

-- Bearer tokens. Only a hash of the secret part is kept; the token itself is shown once, when made.
CREATE TABLE tokens (
  id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{12}$'),
  name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$'),
  role        text NOT NULL CHECK (role IN ('admin', 'author', 'operator', 'viewer')),
  secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz,
  revoked_at  timestamptz,
  revoked_by  text
);

-- The first answer to a POST with an Idempotency-Key, replayed for a retry with the same key and body.
CREATE TABLE idempotency_keys (
  principal     text NOT NULL,
  key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
  method        text NOT NULL,
  path          text NOT NULL,
  request_hash  bytea NOT NULL,
  -- NULL while the first request is still being handled.
  status_code   integer,
  response_body jsonb,
  response_headers jsonb NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_age_idx ON idempotency_keys (created_at);

-- Values of parameters declared sensitive: AES-256-GCM under the configured key, never in `parameters`.
-- The names are listed apart so reading a deployment needs no decryption.
ALTER TABLE deployments ADD COLUMN secret_parameters bytea,
  ADD COLUMN secret_parameter_names text[] NOT NULL DEFAULT '{}';

-- Down Migration
ALTER TABLE deployments DROP COLUMN secret_parameters, DROP COLUMN secret_parameter_names;
DROP TABLE idempotency_keys;
DROP TABLE tokens;
