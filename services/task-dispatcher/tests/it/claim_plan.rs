//! The claim is a prepared statement: its generic plan, the one
//! PostgreSQL settles on, must read only the tasks it claims whether the
//! queue is long or short among many finished tasks (empty tables it may
//! read whole: there is nothing in them).

use test_support::pg::PgCluster;

use crate::helpers::spawn_dispatcher_on;

/// `n` tasks in `state`, each with its payload, from sequence number `from`.
fn tasks_sql(from: i64, n: i64, state: &str) -> String {
    let finished = if state == "queued" { "NULL" } else { "now()" };
    format!(
        "WITH t AS (
             INSERT INTO tasks (task_id, source, event_uuid, event_type, kind, priority, state,
                                max_attempts, run_at, policy, received_at, created_at, updated_at, finished_at)
             SELECT substr(md5(g::text), 1, 16), 'github', 'd-' || g, 'push', 'webhook', 100, '{state}',
                    3, now() - interval '1 minute', 'queue', now(), now(), now(), {finished}
             FROM generate_series({from}, {}) g
             RETURNING task_id
         )
         INSERT INTO task_payloads (task_id, headers, body)
         SELECT task_id, '{{}}'::jsonb, convert_to(repeat('x', 512), 'UTF8') FROM t",
        from + n - 1
    )
}

/// Whole-table scans in the claim's generic plan, and how many tasks it
/// claimed (rolled back, so the tasks stay as they were).
async fn claim_seq_scans(db: &mut tokio_postgres::Client) -> (Vec<String>, u64) {
    db.batch_execute("ANALYZE tasks; ANALYZE task_payloads; ANALYZE task_attempts;")
        .await
        .unwrap();
    test_support::pg::generic_plan_seq_scans(
        db,
        &format!(
            "PREPARE claim(timestamptz, text[], int8, float8, text, int8) AS {}",
            task_dispatcher::store::CLAIM
        ),
        "claim(now(), ARRAY['webhook'], 20, 300, 'agent-1', 4194304)",
    )
    .await
}

#[tokio::test]
async fn the_claim_planned_once_reads_only_the_tasks_it_claims_however_long_the_tables_are() {
    let d = spawn_dispatcher_on(PgCluster::shared().create_database().await.unwrap()).await;
    let mut db = d.db.connect().await.unwrap();

    // Empty tables may be scanned whole (there is nothing to read); the
    // plan is made again once autovacuum's ANALYZE sees them grow.
    let (_, claimed) = claim_seq_scans(&mut db).await;
    assert_eq!(claimed, 0);

    // A short queue among many finished tasks, as a database that has run
    // a while holds until retention.
    db.batch_execute(&tasks_sql(1, 20_000, "succeeded"))
        .await
        .unwrap();
    db.batch_execute(&tasks_sql(20_001, 5, "queued"))
        .await
        .unwrap();
    let (seq, claimed) = claim_seq_scans(&mut db).await;
    assert!(seq.is_empty(), "a short queue: whole tables read: {seq:?}");
    assert_eq!(claimed, 5);

    // A long queue.
    db.batch_execute(&tasks_sql(30_000, 20_000, "queued"))
        .await
        .unwrap();
    let (seq, claimed) = claim_seq_scans(&mut db).await;
    assert!(seq.is_empty(), "a long queue: whole tables read: {seq:?}");
    assert_eq!(claimed, 20);
}
