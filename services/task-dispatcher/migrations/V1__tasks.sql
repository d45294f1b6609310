-- One row per task: one per stored event that a routing rule matched.
CREATE TABLE tasks (
    task_id          TEXT        PRIMARY KEY CHECK (task_id ~ '^[0-9a-f]{16}$'),
    -- Creation order; serialize policy runs an entity's tasks in this order.
    seq              BIGINT      GENERATED ALWAYS AS IDENTITY UNIQUE,
    source           TEXT        NOT NULL,
    event_uuid       TEXT        NOT NULL,
    event_type       TEXT        NOT NULL,
    kind             TEXT        NOT NULL,
    priority         SMALLINT    NOT NULL,            -- lower runs first
    state            TEXT        NOT NULL CHECK (state IN ('queued', 'leased', 'succeeded', 'failed', 'cancelled', 'dead')),
    attempt          INTEGER     NOT NULL DEFAULT 0,  -- counted at claim time
    run              INTEGER     NOT NULL DEFAULT 1,  -- an operator's retry starts a new run
    max_attempts     INTEGER     NOT NULL CHECK (max_attempts >= 1),
    run_at           TIMESTAMPTZ NOT NULL,
    lease_token      TEXT,                            -- the latest claim's fencing token
    lease_expires_at TIMESTAMPTZ,
    agent_id         TEXT,
    claimed_at       TIMESTAMPTZ,
    entity_key       TEXT,
    policy           TEXT        NOT NULL CHECK (policy IN ('queue', 'serialize', 'supersede')),
    cancel_requested BOOLEAN     NOT NULL DEFAULT false,
    cancel_reason    TEXT,
    traceparent      TEXT,
    result           JSONB,
    error            TEXT,
    received_at      TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ
);

-- Exactly the claim predicate.
CREATE INDEX tasks_claimable_idx ON tasks (kind, priority, run_at, seq) WHERE state = 'queued';
CREATE INDEX tasks_leased_idx ON tasks (lease_expires_at) WHERE state = 'leased';
CREATE INDEX tasks_entity_idx ON tasks (kind, entity_key, seq) WHERE entity_key IS NOT NULL AND state IN ('queued', 'leased');
CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE finished_at IS NOT NULL;
-- A safety net under the serialize claim rule: one leased task per entity.
CREATE UNIQUE INDEX tasks_one_leased_per_serialized_entity
    ON tasks (kind, entity_key) WHERE state = 'leased' AND policy = 'serialize';

-- The event's headers and raw body, kept out of the hot row.
CREATE TABLE task_payloads (
    task_id TEXT  PRIMARY KEY REFERENCES tasks (task_id) ON DELETE CASCADE,
    headers JSONB NOT NULL,
    body    BYTEA NOT NULL
);

-- Every claim of a task and how it ended.
CREATE TABLE task_attempts (
    task_id     TEXT        NOT NULL REFERENCES tasks (task_id) ON DELETE CASCADE,
    run         INTEGER     NOT NULL,
    attempt     INTEGER     NOT NULL,
    agent_id    TEXT        NOT NULL,
    lease_token TEXT        NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL,
    ended_at    TIMESTAMPTZ,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'failed', 'lease_lost', 'cancelled')),
    error       TEXT,
    PRIMARY KEY (task_id, run, attempt)
);
CREATE UNIQUE INDEX task_attempts_lease_token_key ON task_attempts (lease_token);

-- Events no routing rule matched: recorded, so "every stored event became a
-- task or was ignored" can be checked.
CREATE TABLE ignored_events (
    task_id     TEXT        PRIMARY KEY,
    source      TEXT        NOT NULL,
    event_uuid  TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    ignored_at  TIMESTAMPTZ NOT NULL
);
