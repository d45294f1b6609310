//! Pruning: finished tasks and ignore records past their retention.

use rave_pg::{GenericClient, Pool};
use time::OffsetDateTime;

/// Deletes up to `batch` tasks (and ignore records) finished before `before`.
pub async fn prune(pool: &Pool, before: OffsetDateTime, batch: i64) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let tasks = client
        .execute(
            "DELETE FROM tasks WHERE task_id IN (
                 SELECT task_id FROM tasks WHERE finished_at < $1
                 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
    let ignored = client
        .execute(
            "DELETE FROM ignored_events WHERE task_id IN (
                 SELECT task_id FROM ignored_events WHERE ignored_at < $1
                 ORDER BY ignored_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
    Ok(tasks + ignored)
}
