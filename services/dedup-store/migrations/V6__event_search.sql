-- Operators search stored events (docs/adr/0019). `body_json` is a parsed
-- copy of the body, written only when the body is JSON that jsonb can hold
-- (checked before the insert, so it never fails one): NULL otherwise, and
-- for events stored before this migration. The raw bytes stay the record.
ALTER TABLE events ADD COLUMN body_json JSONB;
-- Hashes of paths and values: any pointer's `equals`/`in`, and no value is
-- too long for the index.
CREATE INDEX events_body_json_idx ON events USING gin (body_json jsonb_path_ops);
-- Time ranges and event types, in storage order (the search's paging key).
CREATE INDEX events_received_idx ON events (received_at, id);
CREATE INDEX events_type_idx ON events (event_type, id);
