-- A pusher claims a group for a bounded time instead of holding a lock
-- across its HTTP call to the Pushgateway: a pusher that dies leaves a
-- claim that runs out, and no transaction stays open meanwhile.
ALTER TABLE agent_groups
    ADD COLUMN push_claimed_until TIMESTAMPTZ,
    ADD COLUMN push_claimed_by    TEXT;
