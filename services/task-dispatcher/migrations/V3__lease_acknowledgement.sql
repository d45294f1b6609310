-- An attempt counts once the agent shows it has the lease (a heartbeat, a
-- result or a failure): a claim whose answer never reached the agent must
-- not push a task that never ran toward `dead`. Leases that run out
-- unacknowledged are counted apart, with a bound of their own.
ALTER TABLE tasks
    ADD COLUMN lease_acknowledged   BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN unacknowledged_leases INTEGER NOT NULL DEFAULT 0;
