//! Gauges: task counts by kind and state, and the oldest due task's wait.

use rave_pg::{GenericClient, Pool};
use time::OffsetDateTime;

/// Task counts by (kind, state) and the wait of the oldest due task, for
/// the gauges.
pub async fn gauges(
    pool: &Pool,
    now: OffsetDateTime,
) -> anyhow::Result<(Vec<(String, String, i64)>, f64)> {
    let client = pool.get().await?;
    let counts = client
        .query(
            "SELECT kind, state, count(*) FROM tasks GROUP BY kind, state",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let oldest: Option<f64> = client
        .query_one(
            "SELECT extract(epoch FROM ($1::timestamptz - min(run_at)))::float8 FROM tasks WHERE state = 'queued' AND run_at <= $1",
            &[&now],
        )
        .await?
        .get(0);
    Ok((counts, oldest.unwrap_or(0.0).max(0.0)))
}
