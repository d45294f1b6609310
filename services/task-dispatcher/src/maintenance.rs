//! Background work: expiring leases and pruning finished tasks. Each step is
//! a public method so tests drive it directly instead of waiting for loops.
//! Both steps are safe with several replicas (`FOR UPDATE SKIP LOCKED`).

use std::sync::Arc;
use std::time::Duration;

use rave_pg::Pool;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::metrics::{KindLabel, Metrics};
use crate::settings::MaintenanceSettings;
use crate::store;
use crate::waker::Waker;

#[derive(Debug, Clone)]
pub struct Maintenance {
    pub(crate) pool: Pool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) settings: MaintenanceSettings,
}

impl Maintenance {
    /// Returns expired leases to the queue (or to dead/cancelled); counts
    /// each as a lease loss. Returns how many leases were lost.
    pub async fn expire_leases_once(&self) -> anyhow::Result<usize> {
        let lost = store::expire_leases(
            &self.pool,
            self.waker.origin(),
            self.clock.now(),
            self.settings.lease_check_batch,
            self.settings.max_unacknowledged_leases,
        )
        .await?;
        for lease in &lost {
            let label = KindLabel {
                kind: lease.kind.to_string(),
            };
            self.metrics.lease_losses.get_or_create(&label).inc();
            if lease.state == "dead" {
                self.metrics.dead_letters.get_or_create(&label).inc();
            }
            tracing::warn!(task_id = %lease.task_id, state = %lease.state, "lease lost");
        }
        let work = store::per_kind(
            lost.iter()
                .filter(|l| l.state == "queued")
                .map(|l| l.kind.as_str()),
        );
        self.waker.wake_for(&work);
        Ok(lost.len())
    }

    /// Deletes one batch of tasks finished longer ago than the retention.
    pub async fn prune_once(&self) -> anyhow::Result<u64> {
        let before = self.clock.now() - Duration::from_secs(self.settings.retention_hours * 3600);
        store::prune(&self.pool, before, self.settings.prune_batch).await
    }

    /// Runs both steps on their intervals until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut leases =
            tokio::time::interval(Duration::from_millis(self.settings.lease_check_interval_ms));
        let mut prune =
            tokio::time::interval(Duration::from_secs(self.settings.prune_interval_secs));
        for ticker in [&mut leases, &mut prune] {
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = leases.tick() => {
                    // Keep going while a full batch came back.
                    loop {
                        match self.expire_leases_once().await {
                            Ok(n) if n as i64 >= self.settings.lease_check_batch => continue,
                            Ok(_) => break,
                            Err(e) => { tracing::warn!(error = %format!("{e:#}"), "expiring leases failed"); break }
                        }
                    }
                }
                _ = prune.tick() => {
                    loop {
                        match self.prune_once().await {
                            Ok(n) if n as i64 >= self.settings.prune_batch => continue,
                            Ok(_) => break,
                            Err(e) => { tracing::warn!(error = %format!("{e:#}"), "pruning failed"); break }
                        }
                    }
                }
                _ = rave_service::served::stopping(&mut stop) => return,
            }
        }
    }
}
