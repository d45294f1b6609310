-- Aggregated job metrics per agent: every counter and histogram bucket is a
-- row, so a reporter restart or a Pushgateway outage loses nothing.
CREATE TABLE series (
    agent  TEXT             NOT NULL,
    kind   TEXT             NOT NULL,
    name   TEXT             NOT NULL,
    labels JSONB            NOT NULL,   -- extra labels, keys sorted
    value  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (agent, kind, name, labels)
);

-- One Pushgateway group per agent.
CREATE TABLE agent_groups (
    agent           TEXT        PRIMARY KEY,
    last_report_at  TIMESTAMPTZ NOT NULL,
    -- Bumped by every report; a push marks the group clean only if no
    -- report arrived while it was pushing.
    version         BIGINT      NOT NULL DEFAULT 1,
    pushed_version  BIGINT      NOT NULL DEFAULT 0,
    last_pushed_at  TIMESTAMPTZ,
    last_push_error TEXT
);

-- Reports seen, so an agent retrying its report is not counted twice.
CREATE TABLE reports (
    agent       TEXT        NOT NULL,
    task_id     TEXT        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent, task_id, started_at)
);
CREATE INDEX reports_received_at_idx ON reports (received_at);
