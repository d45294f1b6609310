//! Erasing tasks' payloads when their events were erased.

use rave_pg::{Pool, Prepared};
use time::OffsetDateTime;

/// What an erasure did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Erased {
    pub payloads: u64,
    /// Tasks that will not run again (queued, failed or dead, now
    /// cancelled), or are asked to stop (leased).
    pub cancelled: u64,
}

/// In one transaction: tombstones for `ids` (a relayed copy arriving later
/// creates nothing), their payloads and quarantine records deleted, and
/// their tasks stopped: without a payload there is nothing to run. Finished
/// tasks keep their history. Idempotent.
pub async fn erase(
    pool: &Pool,
    now: OffsetDateTime,
    ids: &[String],
    reasons: &[String],
) -> anyhow::Result<Erased> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute_prepared(
        "INSERT INTO erased_tasks (task_id, reason, erased_at)
         SELECT task_id, reason, $3 FROM unnest($1::text[], $2::text[]) AS e(task_id, reason)
         ON CONFLICT (task_id) DO NOTHING",
        &[&ids, &reasons, &now],
    )
    .await?;
    let payloads = tx
        .execute_prepared("DELETE FROM task_payloads WHERE task_id = ANY($1)", &[&ids])
        .await?;
    tx.execute_prepared(
        "DELETE FROM quarantined_events WHERE task_id = ANY($1)",
        &[&ids],
    )
    .await?;
    let mut cancelled = tx
        .execute_prepared(
            "UPDATE tasks SET state = 'cancelled', cancel_reason = 'erased',
                    finished_at = coalesce(finished_at, $2), updated_at = $2
             WHERE task_id = ANY($1) AND state IN ('queued', 'failed', 'dead')",
            &[&ids, &now],
        )
        .await?;
    cancelled += tx
        .execute_prepared(
            "UPDATE tasks SET cancel_requested = true, cancel_reason = 'erased', updated_at = $2
             WHERE task_id = ANY($1) AND state = 'leased' AND NOT cancel_requested",
            &[&ids, &now],
        )
        .await?;
    tx.commit().await?;
    Ok(Erased {
        payloads,
        cancelled,
    })
}
