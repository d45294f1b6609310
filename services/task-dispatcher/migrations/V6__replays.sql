-- Operators' replays of stored events (docs/adr/0019): one audit record per
-- request id, kept for good; a repeat with the same id is answered from it.
CREATE TABLE replays (
    request_id   TEXT        PRIMARY KEY CHECK (request_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    -- The search it ran, as sent to dedup-store (without paging).
    filter       JSONB       NOT NULL,
    max_events   INT         NOT NULL,
    -- Who: the first 12 hex digits of the operator token's SHA-256.
    requested_by TEXT        NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    -- The end of its window: the request's `until`, or when it started. A
    -- repeat reads the same window.
    until_at     TIMESTAMPTZ NOT NULL,
    -- NULL until the replay ran to its end (a stopped process leaves it
    -- NULL: the same request id finishes it).
    finished_at  TIMESTAMPTZ,
    matched      INT         NOT NULL DEFAULT 0,
    created      INT         NOT NULL DEFAULT 0,
    ignored      INT         NOT NULL DEFAULT 0,
    duplicates   INT         NOT NULL DEFAULT 0,
    quarantined  INT         NOT NULL DEFAULT 0,
    -- More events matched than max_events: where the next request starts.
    next_after   BIGINT
);

-- Each replayed task (or ignore record) and the event's original task id,
-- written in the transaction that creates it.
CREATE TABLE replayed_tasks (
    task_id          TEXT        PRIMARY KEY,
    request_id       TEXT        NOT NULL,
    original_task_id TEXT        NOT NULL,
    replayed_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX replayed_tasks_request_idx ON replayed_tasks (request_id);
CREATE INDEX replayed_tasks_original_idx ON replayed_tasks (original_task_id);
CREATE INDEX replayed_tasks_replayed_at_idx ON replayed_tasks (replayed_at);

-- Replays walk ignored events oldest first (and pruning deletes them so).
CREATE INDEX ignored_events_ignored_at_idx ON ignored_events (ignored_at, task_id);
