//! Retention: events stored longer ago than their source's age are deleted,
//! a batch at a time, with their set-aside records.
//!
//! Each batch is one short statement on the `(source, id)` index, bounded
//! by the first event still within the age, so a step costs the rows it
//! deletes, not a scan of the table. Events not yet delivered to
//! task-dispatcher (still in the outbox) are never deleted: that would lose
//! their task. Safe with several replicas (`FOR UPDATE SKIP LOCKED`). Each
//! step is a public method, so tests drive it instead of waiting.

use std::sync::Arc;
use std::time::Duration;

use rave_pg::{Pool, Prepared};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::settings::RetentionSettings;

#[derive(Debug, Clone)]
pub struct Retention {
    pool: Pool,
    settings: RetentionSettings,
    metrics: Arc<Metrics>,
}

/// Every source with stored events: a skip scan of the `(source, id)` index,
/// one probe per source, however many events each has.
const SOURCES: &str = "WITH RECURSIVE s AS (
         (SELECT source FROM events ORDER BY source LIMIT 1)
         UNION ALL
         SELECT (SELECT e.source FROM events e WHERE e.source > s.source ORDER BY e.source LIMIT 1)
         FROM s WHERE s.source IS NOT NULL
     )
     SELECT source FROM s WHERE source IS NOT NULL";

/// One batch of `$1`'s events stored before `$2`, at most `$3`.
const DELETE_BATCH: &str = "WITH boundary AS (
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
     DELETE FROM events e USING doomed d WHERE e.id = d.id";

impl Retention {
    pub fn new(pool: Pool, settings: RetentionSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            settings,
            metrics,
        }
    }

    /// Deletes at most one batch per source of the events past their age
    /// at `now`. Returns how many it deleted, and whether a source had more.
    pub async fn prune_once(&self, now: OffsetDateTime) -> anyhow::Result<(u64, bool)> {
        let client = self.pool.get().await?;
        let sources: Vec<String> = client
            .query_prepared(SOURCES, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (mut deleted, mut more) = (0, false);
        for source in sources {
            let Some(age) = self.settings.max_age(&source) else {
                continue;
            };
            let n = client
                .execute_prepared(DELETE_BATCH, &[&source, &(now - age), &self.settings.batch])
                .await?;
            more |= n as i64 >= self.settings.batch;
            deleted += n;
        }
        self.metrics.deleted_by_retention.inc_by(deleted);
        Ok((deleted, more))
    }

    /// Prunes every `interval_secs` until `stop`, batch after batch while a
    /// source has more, pausing after each so that deleting takes at most
    /// `max_busy_share` of the time (and at least `pause_ms`).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(Duration::from_secs(self.settings.interval_secs));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let min_pause = Duration::from_millis(self.settings.pause_ms);
        let idle_per_busy = 1.0 / self.settings.max_busy_share - 1.0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = rave_service::served::stopping(&mut stop) => return,
            }
            loop {
                let started = tokio::time::Instant::now();
                match self.prune_once(OffsetDateTime::now_utc()).await {
                    Ok((_, true)) => {}
                    Ok((_, false)) => break,
                    Err(e) => {
                        self.metrics.retention_failures.inc();
                        tracing::warn!(error = %format!("{e:#}"), "deleting old events failed");
                        break;
                    }
                }
                let pause = started.elapsed().mul_f64(idle_per_busy).max(min_pause);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = rave_service::served::stopping(&mut stop) => return,
                }
            }
        }
    }
}
