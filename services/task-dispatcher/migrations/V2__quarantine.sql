-- Events that could not become a task or an ignore record: set aside with
-- the reason, never retried on their own (ADR 12). `event` is the relayed
-- event as the relay sent it (JSON bytes: always storable), so an operator
-- can retry it after a routing change. `task_id` is NULL only when the
-- relayed event did not even carry a readable one.
CREATE TABLE quarantined_events (
    id             BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id        TEXT        UNIQUE,
    source         TEXT,
    event_uuid     TEXT,
    event_type     TEXT,
    reason         TEXT        NOT NULL,
    event          BYTEA       NOT NULL,
    attempts       INT         NOT NULL DEFAULT 1,
    quarantined_at TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX quarantined_events_by_time ON quarantined_events (quarantined_at DESC);
