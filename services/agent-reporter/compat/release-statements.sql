-- Every statement agent-reporter prepared in its tests at release time
-- (scripts/compat-snapshot). Its compat test prepares each against
-- the current migrations: a change that breaks one breaks a rolling
-- restart from that release.
-- statement
DELETE FROM agent_groups WHERE agent = $1 AND last_report_at < $2 AND push_claimed_by = $3
-- statement
DELETE FROM reports WHERE received_at < $1
-- statement
DELETE FROM series WHERE agent = $1
-- statement
INSERT INTO agent_groups (agent, last_report_at)
             SELECT * FROM unnest($1::text[], $2::timestamptz[])
             ON CONFLICT (agent) DO UPDATE SET last_report_at = greatest(agent_groups.last_report_at, EXCLUDED.last_report_at),
                                               version = agent_groups.version + 1
-- statement
INSERT INTO reports (agent, task_id, started_at, received_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
             ON CONFLICT DO NOTHING
-- statement
INSERT INTO series (agent, kind, name, labels, value)
             SELECT agent, kind, name, labels::jsonb, value
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])
                  AS s(agent, kind, name, labels, value)
             ON CONFLICT (agent, kind, name, labels) DO UPDATE SET value = series.value + EXCLUDED.value
-- statement
SELECT agent FROM agent_groups WHERE (version > pushed_version OR last_pushed_at IS NULL
                   OR last_pushed_at < $1::timestamptz - make_interval(secs => $2)) ORDER BY agent
-- statement
SELECT agent FROM agent_groups WHERE last_report_at < $1 ORDER BY agent
-- statement
SELECT agent, count(*) FROM series WHERE agent = ANY($1) GROUP BY agent
-- statement
SELECT count(*) FILTER (WHERE version > pushed_version),
                    coalesce(sum(version - pushed_version) FILTER (WHERE version > pushed_version), 0)::int8,
                    max(last_report_at)
             FROM agent_groups
-- statement
SELECT k.agent, k.kind, k.name, k.labels FROM series s
             JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(agent, kind, name, labels)
               ON s.agent = k.agent AND s.kind = k.kind AND s.name = k.name AND s.labels = k.labels::jsonb
-- statement
SELECT kind, name, labels, value FROM series WHERE agent = $1 ORDER BY name, kind, labels::text
-- statement
SELECT pg_advisory_xact_lock($1, h)
         FROM (SELECT DISTINCT hashtext(a) AS h FROM unnest($2::text[]) AS a ORDER BY h) s
-- statement
SELECT pg_advisory_xact_lock($1, hashtext($2))
-- statement
SELECT r.agent, r.task_id, r.started_at FROM reports r
             JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(agent, task_id, started_at)
               USING (agent, task_id, started_at)
-- statement
UPDATE agent_groups SET last_push_error = $2,
                    push_claimed_until = CASE WHEN push_claimed_by = $3 THEN NULL ELSE push_claimed_until END,
                    push_claimed_by = CASE WHEN push_claimed_by = $3 THEN NULL ELSE push_claimed_by END
             WHERE agent = $1
-- statement
UPDATE agent_groups SET push_claimed_until = $4, push_claimed_by = $5
                 WHERE agent = $2 AND last_report_at < $3 AND (push_claimed_until IS NULL OR push_claimed_until <= $1::timestamptz)
-- statement
UPDATE agent_groups SET push_claimed_until = $4, push_claimed_by = $5
                 WHERE agent = $3 AND (version > pushed_version OR last_pushed_at IS NULL
                   OR last_pushed_at < $1::timestamptz - make_interval(secs => $2)) AND (push_claimed_until IS NULL OR push_claimed_until <= $1::timestamptz) RETURNING version
-- statement
UPDATE agent_groups SET pushed_version = greatest(pushed_version, $2), last_pushed_at = $3,
                    last_push_error = NULL,
                    push_claimed_until = CASE WHEN push_claimed_by = $4 THEN NULL ELSE push_claimed_until END,
                    push_claimed_by = CASE WHEN push_claimed_by = $4 THEN NULL ELSE push_claimed_by END
             WHERE agent = $1
