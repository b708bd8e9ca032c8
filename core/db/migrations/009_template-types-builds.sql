-- Up Migration

-- A template type: a base image plus what templates made from it declare (parameters, outputs, actions).
-- An ad-hoc type's image is generic: templates of it are files mounted at /template at run time, never built.
CREATE TABLE template_types (
  name        gg_name PRIMARY KEY,
  description text NOT NULL DEFAULT '',
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Editable only while no template version uses it (the API checks, under the type's row lock).
CREATE TABLE template_type_versions (
  type_name   gg_name NOT NULL REFERENCES template_types (name) ON DELETE RESTRICT,
  version     integer NOT NULL CHECK (version > 0),
  image       text NOT NULL CHECK (length(image) BETWEEN 1 AND 512),
  adhoc       boolean NOT NULL DEFAULT false,
  parameters  jsonb NOT NULL DEFAULT '[]',
  outputs     jsonb NOT NULL DEFAULT '[]',
  actions     text[] NOT NULL CHECK (cardinality(actions) > 0),
  tf_vars     boolean NOT NULL DEFAULT false,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (type_name, version)
);

-- An author's files, validated and normalized (core/template-sources): stored once, referenced by builds and
-- by ad-hoc template versions. Compressed already: kept out of line without recompression.
CREATE TABLE template_sources (
  id          text PRIMARY KEY CHECK (id ~ '^src-[a-z0-9]{12}$'),
  sha256      bytea NOT NULL,
  format      text NOT NULL CHECK (format IN ('zip', 'tgz', 'git')),
  files       integer NOT NULL,
  bytes       bigint NOT NULL,
  archive     bytea NOT NULL,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE template_sources ALTER COLUMN archive SET STORAGE EXTERNAL;

-- A build: a source (an upload, or a git repository fetched by the build) into an image FROM a type's image.
CREATE TABLE template_builds (
  id             text PRIMARY KEY CHECK (id ~ '^bld-[a-z0-9]{12}$'),
  template_name  gg_name NOT NULL REFERENCES templates (name) ON DELETE RESTRICT,
  type_name      gg_name NOT NULL,
  type_version   integer NOT NULL,
  source         jsonb NOT NULL,
  source_id      text REFERENCES template_sources (id) ON DELETE RESTRICT,
  -- Which of the type's parameters the template delegates, the values it fixes, and its own.
  parameters     jsonb NOT NULL,
  status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
  reason         text,
  message        text,
  -- The template version it makes: reserved at request, so the image's labels carry it.
  version        integer NOT NULL,
  image          text,
  requested_by   text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  started_at     timestamptz,
  finished_at    timestamptz,
  FOREIGN KEY (type_name, type_version) REFERENCES template_type_versions (type_name, version) ON DELETE RESTRICT
);
CREATE INDEX template_builds_template ON template_builds (template_name, created_at DESC);
CREATE UNIQUE INDEX template_builds_version ON template_builds (template_name, version);

CREATE TABLE template_build_logs (
  build_id  text NOT NULL REFERENCES template_builds (id) ON DELETE CASCADE,
  seq       bigserial,
  at        timestamptz NOT NULL DEFAULT now(),
  line      text NOT NULL,
  PRIMARY KEY (build_id, seq)
);

-- A version made from a type: built (its image holds the files) or ad-hoc (files mounted from source_id).
ALTER TABLE template_versions
  ADD COLUMN type_name        gg_name,
  ADD COLUMN type_version     integer,
  ADD COLUMN source_id        text REFERENCES template_sources (id) ON DELETE RESTRICT,
  ADD COLUMN source           jsonb,
  ADD COLUMN build_id         text REFERENCES template_builds (id) ON DELETE RESTRICT,
  ADD COLUMN adhoc            boolean NOT NULL DEFAULT false,
  ADD COLUMN fixed_parameters jsonb NOT NULL DEFAULT '{}',
  ADD CONSTRAINT template_versions_type FOREIGN KEY (type_name, type_version) REFERENCES template_type_versions (type_name, version) ON DELETE RESTRICT,
  ADD CONSTRAINT template_versions_adhoc_files CHECK (NOT adhoc OR source_id IS NOT NULL);

-- Down Migration
ALTER TABLE template_versions DROP CONSTRAINT template_versions_adhoc_files, DROP CONSTRAINT template_versions_type,
  DROP COLUMN fixed_parameters, DROP COLUMN adhoc, DROP COLUMN build_id, DROP COLUMN source, DROP COLUMN source_id,
  DROP COLUMN type_version, DROP COLUMN type_name;
DROP TABLE template_build_logs;
DROP TABLE template_builds;
DROP TABLE template_sources;
DROP TABLE template_type_versions;
DROP TABLE template_types;
