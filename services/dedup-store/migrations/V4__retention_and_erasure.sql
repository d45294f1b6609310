-- Events erased on an operator's request (docs/security.md, "A secret in a
-- payload"): what was erased, by whom, when and why. The body is gone; this
-- row stays as the audit record and as the delivery's tombstone: a sender's
-- retry of an erased delivery is answered as a duplicate and stores nothing.
-- `forwarded_at` is set once task-dispatcher erased its copy (the task's
-- payload); until then the relay keeps asking it to.
CREATE TABLE erasures (
    id           BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id   TEXT        NOT NULL,
    source       TEXT        NOT NULL,
    event_uuid   TEXT        NOT NULL,
    event_type   TEXT        NOT NULL,
    task_id      TEXT        NOT NULL,
    stored_at    TIMESTAMPTZ NOT NULL,
    erased_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    requested_by TEXT        NOT NULL,
    token        TEXT        NOT NULL,
    reason       TEXT        NOT NULL,
    -- Not before the end of a relay's claim on the event's outbox row: a
    -- delivery in flight when the event was erased has then ended, and
    -- task-dispatcher erases the task it may have created.
    forward_after TIMESTAMPTZ NOT NULL DEFAULT now(),
    forwarded_at  TIMESTAMPTZ,
    CONSTRAINT erasures_source_event_uuid_key UNIQUE (source, event_uuid)
);
CREATE INDEX erasures_request_idx ON erasures (request_id);
CREATE INDEX erasures_unforwarded_idx ON erasures (id) WHERE forwarded_at IS NULL;
