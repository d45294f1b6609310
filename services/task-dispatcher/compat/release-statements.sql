-- Every statement task-dispatcher prepared in its tests at release time
-- (scripts/compat-snapshot). Its compat test prepares each against
-- the current migrations: a change that breaks one breaks a rolling
-- restart from that release.
-- statement
DELETE FROM quarantined_events WHERE task_id = ANY($1)
-- statement
DELETE FROM task_payloads WHERE task_id = ANY($1)
-- statement
INSERT INTO erased_tasks (task_id, reason, erased_at)
         SELECT task_id, reason, $3 FROM unnest($1::text[], $2::text[]) AS e(task_id, reason)
         ON CONFLICT (task_id) DO NOTHING
-- statement
INSERT INTO ignored_events (task_id, source, event_uuid, event_type, received_at, ignored_at)
                 SELECT *, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 ON CONFLICT (task_id) DO NOTHING
-- statement
INSERT INTO task_payloads (task_id, headers, body)
             SELECT i.task_id, i.headers, i.body
             FROM unnest($1::text[], $2::jsonb[], $3::bytea[]) AS i(task_id, headers, body)
             WHERE i.task_id = ANY($4)
-- statement
INSERT INTO tasks (task_id, source, event_uuid, event_type, kind, priority, state,
                                    max_attempts, run_at, entity_key, policy, traceparent,
                                    received_at, created_at, updated_at)
                 SELECT i.task_id, i.source, i.event_uuid, i.event_type, i.kind, i.priority, 'queued',
                        i.max_attempts, $12, i.entity_key, i.policy, i.traceparent, i.received_at, $12, $12
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[],
                             $7::int4[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])
                      WITH ORDINALITY AS i(task_id, source, event_uuid, event_type, kind, priority,
                                           max_attempts, entity_key, policy, traceparent, received_at, n)
                 -- An erased event's late copy creates nothing: a duplicate.
                 WHERE NOT EXISTS (SELECT 1 FROM erased_tasks x WHERE x.task_id = i.task_id)
                 ORDER BY i.n
                 ON CONFLICT (task_id) DO NOTHING
                 RETURNING task_id, kind, policy
-- statement
SELECT 1 FROM tasks WHERE task_id = $1
-- statement
SELECT extract(epoch FROM ($1::timestamptz - min(run_at)))::float8 FROM tasks WHERE state = 'queued' AND run_at <= $1
-- statement
SELECT kind, 'queued', count(*) FROM tasks WHERE state = 'queued' GROUP BY kind
             UNION ALL
             SELECT kind, 'leased', count(*) FROM tasks WHERE state = 'leased' GROUP BY kind
             UNION ALL
             SELECT kind, 'dead', count(*) FROM tasks WHERE state = 'dead' GROUP BY kind
-- statement
SELECT pg_notify($1, $2)
-- statement
SELECT t.state, t.run_at FROM task_attempts a JOIN tasks t USING (task_id)
                 WHERE a.lease_token = $1 AND a.task_id = $2 AND a.agent_id = $3 AND a.outcome = 'failed'
-- statement
SELECT task_id, state, lease_token, agent_id, kind FROM tasks WHERE task_id = ANY($1)
-- statement
UPDATE task_attempts SET ended_at = $2, outcome = 'failed', error = $3 WHERE lease_token = $1
-- statement
UPDATE tasks SET cancel_requested = true, cancel_reason = 'erased', updated_at = $2
             WHERE task_id = ANY($1) AND state = 'leased' AND NOT cancel_requested
-- statement
UPDATE tasks SET lease_expires_at = $4 + make_interval(secs => $5), updated_at = $4,
                    lease_acknowledged = true
             WHERE task_id = $1 AND state = 'leased' AND lease_token = $2 AND agent_id = $3
               AND lease_expires_at >= $4
             RETURNING lease_expires_at, cancel_requested, cancel_reason
-- statement
UPDATE tasks SET state = $2::text, error = $3, updated_at = $4::timestamptz, lease_expires_at = NULL,
                run_at = coalesce($5::timestamptz, run_at),
                lease_token = CASE WHEN $2::text = 'queued' THEN NULL ELSE lease_token END,
                agent_id = CASE WHEN $2::text = 'queued' THEN NULL ELSE agent_id END,
                finished_at = CASE WHEN $2::text = 'queued' THEN NULL ELSE $4::timestamptz END
         WHERE task_id = $1
-- statement
UPDATE tasks SET state = 'cancelled', cancel_reason = 'erased',
                    finished_at = coalesce(finished_at, $2), updated_at = $2
             WHERE task_id = ANY($1) AND state IN ('queued', 'failed', 'dead')
-- statement
UPDATE tasks o SET cancel_requested = true, cancel_reason = 'superseded', updated_at = $2
                         FROM (SELECT kind, entity_key, max(seq) AS seq
                          FROM tasks WHERE task_id = ANY($1) GROUP BY kind, entity_key) n
                         WHERE o.kind = n.kind AND o.entity_key = n.entity_key AND o.seq < n.seq
                           AND o.state = 'leased' AND NOT o.cancel_requested
-- statement
UPDATE tasks o SET state = 'cancelled', cancel_reason = 'superseded',
                                error = 'superseded by a newer task', finished_at = $2, updated_at = $2
                         FROM (SELECT kind, entity_key, max(seq) AS seq
                          FROM tasks WHERE task_id = ANY($1) GROUP BY kind, entity_key) n
                         WHERE o.kind = n.kind AND o.entity_key = n.entity_key AND o.seq < n.seq AND o.state = 'queued'
-- statement
WITH expired AS (
                 SELECT task_id FROM tasks WHERE state = 'leased' AND lease_expires_at < $1
                 ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
             ), lost AS (
                 UPDATE tasks t
                 SET state = CASE WHEN t.cancel_requested THEN 'cancelled'
                                  WHEN NOT t.lease_acknowledged
                                       AND t.unacknowledged_leases + 1 >= $3 THEN 'dead'
                                  WHEN t.lease_acknowledged
                                       AND t.attempt - t.unacknowledged_leases >= t.max_attempts THEN 'dead'
                                  ELSE 'queued' END,
                     finished_at = CASE WHEN t.cancel_requested
                                         OR (NOT t.lease_acknowledged AND t.unacknowledged_leases + 1 >= $3)
                                         OR (t.lease_acknowledged AND t.attempt - t.unacknowledged_leases >= t.max_attempts)
                                        THEN $1 END,
                     unacknowledged_leases = t.unacknowledged_leases + CASE WHEN t.lease_acknowledged THEN 0 ELSE 1 END,
                     run_at = $1, lease_token = NULL, lease_expires_at = NULL, agent_id = NULL,
                     error = CASE WHEN t.lease_acknowledged THEN 'lease lost'
                                  ELSE 'lease expired before the agent acknowledged it' END,
                     updated_at = $1
                 FROM expired e WHERE t.task_id = e.task_id
                 RETURNING t.task_id, t.kind, t.state, t.error
             ), attempts AS (
                 UPDATE task_attempts a SET ended_at = $1, outcome = 'lease_lost', error = l.error
                 FROM lost l WHERE a.task_id = l.task_id AND a.ended_at IS NULL
             )
             SELECT task_id, kind, state FROM lost
-- statement
WITH input AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
                     AS i(task_id, lease_token, agent_id, result)
             ), done AS (
                 UPDATE tasks t SET state = 'succeeded', result = i.result, error = NULL,
                        finished_at = $5, updated_at = $5, lease_expires_at = NULL
                 FROM input i
                 WHERE t.task_id = i.task_id AND t.state = 'leased' AND t.lease_token = i.lease_token
                   AND t.agent_id = i.agent_id AND t.lease_expires_at >= $5
                 RETURNING t.task_id, t.kind, t.claimed_at, t.traceparent, t.lease_token
             ), attempts AS (
                 UPDATE task_attempts a SET ended_at = $5, outcome = 'succeeded'
                 FROM done d WHERE a.lease_token = d.lease_token
             )
             SELECT task_id, kind, extract(epoch FROM ($5::timestamptz - claimed_at))::float8, traceparent FROM done
