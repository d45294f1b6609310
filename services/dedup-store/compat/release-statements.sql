-- Every statement dedup-store prepared in its tests at release time
-- (scripts/compat-snapshot). Its compat test prepares each against
-- the current migrations: a change that breaks one breaks a rolling
-- restart from that release.
-- statement
DELETE FROM outbox WHERE id = ANY($1) AND claimed_by = $2
-- statement
SELECT (SELECT count(*) FROM outbox),
                    coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM outbox))::float8, 0),
                    (SELECT count(*) FROM outbox_refused),
                    (SELECT count(*) FROM erasures WHERE forwarded_at IS NULL)
-- statement
SELECT id, source, event_uuid, event_type, task_id, trace_id, received_at, stored_at, length(body) FROM events
                 WHERE id > $1 AND ($2::text IS NULL OR source = $2)
                 ORDER BY id LIMIT $3
-- statement
SELECT id, source, event_uuid, event_type, task_id, trace_id, received_at, stored_at, length(body), headers, body FROM events WHERE source = $1 AND event_uuid = $2
-- statement
SELECT id, task_id, reason FROM erasures
                 WHERE forwarded_at IS NULL AND forward_after <= now()
                 ORDER BY id LIMIT $1
-- statement
SELECT task_id, source, event_uuid, event_type, received_at, trace_id, headers, body, traceparent
                 FROM events WHERE id = ANY($1) ORDER BY id
-- statement
UPDATE erasures SET forwarded_at = now() WHERE id = ANY($1)
-- statement
UPDATE outbox SET claimed_until = NULL, claimed_by = NULL
                 WHERE id = ANY($1) AND claimed_by = $2
-- statement
UPDATE outbox o SET claimed_until = now() + make_interval(secs => $2), claimed_by = $3
                 FROM (SELECT o.id, length(e.body) AS size FROM outbox o JOIN events e ON e.id = o.event_id
                       WHERE o.claimed_until IS NULL OR o.claimed_until < now()
                       ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED) p
                 WHERE o.id = p.id
                 RETURNING o.id, o.event_id, p.size
-- statement
WITH RECURSIVE s AS (
         (SELECT source FROM events ORDER BY source LIMIT 1)
         UNION ALL
         SELECT (SELECT e.source FROM events e WHERE e.source > s.source ORDER BY e.source LIMIT 1)
         FROM s WHERE s.source IS NOT NULL
     )
     SELECT source FROM s WHERE source IS NOT NULL
-- statement
WITH boundary AS (
         SELECT coalesce(
             (SELECT id FROM events WHERE source = $1 AND stored_at >= $2 ORDER BY source, id LIMIT 1),
             9223372036854775807) AS id
     ), doomed AS (
         SELECT e.id FROM events e, boundary b
         WHERE e.source = $1 AND e.id < b.id AND e.stored_at < $2
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id)
         ORDER BY e.source, e.id LIMIT $3
         FOR UPDATE OF e SKIP LOCKED
     ), refused AS (
         DELETE FROM outbox_refused r USING doomed d WHERE r.event_id = d.id
     )
     DELETE FROM events e USING doomed d WHERE e.id = d.id
-- statement
WITH gone AS (DELETE FROM outbox WHERE id = $1 AND claimed_by = $2 RETURNING event_id, task_id)
                 INSERT INTO outbox_refused (event_id, task_id, status, answer)
                 SELECT event_id, task_id, $3, $4 FROM gone ON CONFLICT (event_id) DO NOTHING
