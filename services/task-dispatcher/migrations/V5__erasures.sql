-- Tasks whose event was erased on an operator's request (dedup-store's
-- `erasures` holds the audit record): the payload is gone, and a relayed
-- copy of the event that arrives later creates nothing. Pruned with the
-- finished tasks' retention: by then no delivery can still be in flight.
CREATE TABLE erased_tasks (
    task_id   TEXT        PRIMARY KEY,
    reason    TEXT        NOT NULL,
    erased_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX erased_tasks_erased_at_idx ON erased_tasks (erased_at);
