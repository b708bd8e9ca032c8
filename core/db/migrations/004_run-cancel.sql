-- Up Migration

-- Who asked for a run to be cancelled, and when; the run itself stays the workflow's to end.
ALTER TABLE runs ADD COLUMN cancel_requested_by text, ADD COLUMN cancel_requested_at timestamptz;

-- Down Migration
ALTER TABLE runs DROP COLUMN cancel_requested_by, DROP COLUMN cancel_requested_at;
