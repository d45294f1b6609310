-- Every verified webhook delivery, stored exactly once per (source, event_uuid).
CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      TEXT        NOT NULL CHECK (source ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    event_uuid  TEXT        NOT NULL CHECK (length(event_uuid) BETWEEN 1 AND 255),
    event_type  TEXT        NOT NULL CHECK (length(event_type) BETWEEN 1 AND 255),
    task_id     TEXT        NOT NULL UNIQUE CHECK (task_id ~ '^[0-9a-f]{16}$'),
    trace_id    TEXT                 CHECK (trace_id ~ '^[0-9a-f]{32}$'),
    received_at TIMESTAMPTZ NOT NULL,
    stored_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    headers     JSONB       NOT NULL,
    -- The verified raw body, byte-exact: never re-serialised.
    body        BYTEA       NOT NULL,
    CONSTRAINT events_source_event_uuid_key UNIQUE (source, event_uuid)
);

CREATE INDEX events_source_id_idx ON events (source, id);

-- Written in the same transaction as each new event; the task-dispatcher's
-- relay consumes it, so no stored event can miss becoming a task.
CREATE TABLE outbox (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   BIGINT      NOT NULL UNIQUE REFERENCES events (id),
    task_id    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
