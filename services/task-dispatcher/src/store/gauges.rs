//! Gauges: task counts by kind and state, and the oldest due task's wait.

use rave_pg::{Pool, Prepared};
use time::OffsetDateTime;

/// Task counts by (kind, state) for the states the gauges show, and the
/// wait of the oldest due task. Each count reads its own partial index
/// (tasks_claimable_idx, tasks_leased_idx, tasks_dead_idx), so the cost
/// follows the queue, not the millions of finished tasks kept beside it.
pub async fn gauges(
    pool: &Pool,
    now: OffsetDateTime,
) -> anyhow::Result<(Vec<(String, String, i64)>, f64)> {
    let client = pool.get().await?;
    let counts = client
        .query_prepared(
            "SELECT kind, 'queued', count(*) FROM tasks WHERE state = 'queued' GROUP BY kind
             UNION ALL
             SELECT kind, 'leased', count(*) FROM tasks WHERE state = 'leased' GROUP BY kind
             UNION ALL
             SELECT kind, 'dead', count(*) FROM tasks WHERE state = 'dead' GROUP BY kind",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let oldest: Option<f64> = client
        .query_one_prepared(
            "SELECT extract(epoch FROM ($1::timestamptz - min(run_at)))::float8 FROM tasks WHERE state = 'queued' AND run_at <= $1",
            &[&now],
        )
        .await?
        .get(0);
    Ok((counts, oldest.unwrap_or(0.0).max(0.0)))
}
