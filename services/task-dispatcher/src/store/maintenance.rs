//! Pruning: finished tasks, ignore records, quarantine records, erasure
//! tombstones and replay links past their retention.

use rave_pg::{GenericClient, Pool};
use time::OffsetDateTime;

/// Deletes up to `batch` tasks (and ignore records) finished before `before`.
pub async fn prune(pool: &Pool, before: OffsetDateTime, batch: i64) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let mut deleted = 0;
    // (table, the column that says since when it is done); both fixed here.
    for (table, done_at) in [
        ("tasks", "finished_at"),
        ("ignored_events", "ignored_at"),
        ("erased_tasks", "erased_at"),
        // A replay's links go with the tasks' retention; its audit record
        // (`replays`) stays.
        ("replayed_tasks", "replayed_at"),
    ] {
        let sql = format!(
            "DELETE FROM {table} WHERE task_id IN (
                 SELECT task_id FROM {table} WHERE {done_at} < $1
                 ORDER BY {done_at} LIMIT $2 FOR UPDATE SKIP LOCKED)"
        );
        deleted += client.execute(&sql, &[&before, &batch]).await?;
    }
    // Quarantine records set aside longer ago than the retention.
    deleted += client
        .execute(
            "DELETE FROM quarantined_events WHERE id IN (
                 SELECT id FROM quarantined_events WHERE quarantined_at < $1
                 ORDER BY quarantined_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
    Ok(deleted)
}
