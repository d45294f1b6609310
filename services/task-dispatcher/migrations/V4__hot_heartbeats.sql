-- Heartbeats set lease_expires_at on the hottest table. While it was
-- indexed, every heartbeat was a full update: a new row version with a new
-- entry in every index of tasks, and dead tuples for vacuum. The leased set
-- is small (agents times their batch), so lease expiry now reads it whole
-- through an index on a column that never changes, and a heartbeat updates
-- its row in place (a HOT update) when the page has room.
DROP INDEX tasks_leased_idx;
CREATE INDEX tasks_leased_idx ON tasks (kind) WHERE state = 'leased';
-- Dead letters, for the gauges: counted without reading finished tasks.
CREATE INDEX tasks_dead_idx ON tasks (kind) WHERE state = 'dead';
-- Room on each page for those in-place updates (pages written from now on).
ALTER TABLE tasks SET (fillfactor = 85);
