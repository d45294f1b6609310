-- The relay claims outbox rows instead of holding their row locks across
-- its HTTP call (ADR 12): a claim names its relay and ends at
-- `claimed_until`, after which another relay (or replica) may take the row.
ALTER TABLE outbox ADD COLUMN claimed_until TIMESTAMPTZ;
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;

-- Events task-dispatcher refused on their own (a 4xx for a batch of one):
-- moved here with the answer, so they are neither resent forever nor
-- scanned again by every relay step.
CREATE TABLE outbox_refused (
    event_id   BIGINT      PRIMARY KEY REFERENCES events (id),
    task_id    TEXT        NOT NULL,
    status     INT         NOT NULL,
    answer     TEXT        NOT NULL,
    refused_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
