//! Prefill: N stored events and N finished tasks (payload, attempt) loaded
//! with PostgreSQL's own bulk path (`INSERT ... SELECT generate_series`), so
//! the steps after it measure a database that has grown, as one does after
//! months of webhooks. Bodies are small (256 bytes): the point is the rows
//! and their indexes, not the disk.

use std::time::Instant;

use crate::bench::Ctx;

/// Rows per statement: progress shows, and no transaction grows huge.
const CHUNK: u64 = 250_000;

/// Loads `n` events and `n` finished tasks; the seconds it took.
pub fn prefill(ctx: &Ctx, n: u64) -> anyhow::Result<f64> {
    let pg = crate::bench::tables::postgres(ctx)?;
    let started = Instant::now();
    let run = &ctx.run_id;
    let mut done = 0;
    while done < n {
        let (from, to) = (done + 1, (done + CHUNK).min(n));
        // The same md5 names the event's task in both databases.
        let task_id = format!("substr(md5('{run}-' || g), 1, 16)");
        pg.psql_in(
            "rave_events",
            &format!(
                "INSERT INTO events (source, event_uuid, event_type, task_id, received_at, stored_at, headers, body)
                 SELECT 'prefill', '{run}-' || g, 'push', {task_id},
                        now() - interval '2 hours', now() - interval '2 hours', '{{}}'::jsonb,
                        convert_to(repeat('x', 256), 'UTF8')
                 FROM generate_series({from}, {to}) g
                 ON CONFLICT DO NOTHING"
            ),
        )?;
        pg.psql_in(
            "rave_tasks",
            &format!(
                "WITH t AS (
                     INSERT INTO tasks (task_id, source, event_uuid, event_type, kind, priority, state, attempt,
                                        max_attempts, run_at, lease_token, agent_id, claimed_at, policy, result,
                                        received_at, created_at, updated_at, finished_at, lease_acknowledged)
                     SELECT {task_id}, 'prefill', '{run}-' || g, 'push', 'webhook', 100, 'succeeded', 1,
                            3, now() - interval '2 hours', md5('lease-{run}-' || g), 'agent-dev',
                            now() - interval '2 hours', 'queue', '{{\"ok\": true}}'::jsonb,
                            now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour',
                            now() - interval '1 hour', true
                     FROM generate_series({from}, {to}) g
                     ON CONFLICT DO NOTHING
                     RETURNING task_id, lease_token, claimed_at, finished_at
                 ), p AS (
                     INSERT INTO task_payloads (task_id, headers, body)
                     SELECT task_id, '{{}}'::jsonb, convert_to(repeat('x', 256), 'UTF8') FROM t
                 )
                 INSERT INTO task_attempts (task_id, run, attempt, agent_id, lease_token, claimed_at, ended_at, outcome)
                 SELECT task_id, 1, 1, 'agent-dev', lease_token, claimed_at, finished_at, 'succeeded' FROM t"
            ),
        )?;
        done = to;
        println!("  {done} of {n} ({:.0} s)", started.elapsed().as_secs_f64());
    }
    // As an aged database would be: vacuumed, with fresh statistics.
    pg.psql_in("rave_events", "VACUUM ANALYZE events")?;
    // One statement per call: VACUUM cannot run inside a transaction block.
    for table in ["tasks", "task_payloads", "task_attempts"] {
        pg.psql_in("rave_tasks", &format!("VACUUM ANALYZE {table}"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("  prefilled in {secs:.0} s");
    Ok(secs)
}
