//! Replaying a spool into dedup-store: in batches, their records sent
//! together and marked replayed with one write, oldest first.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt as _;

use super::Spool;
use crate::error::IngestError;

/// Replays the spool into dedup-store, oldest first.
#[derive(Debug, Clone)]
pub struct Replayer {
    pub spool: Arc<Spool>,
    pub store: Arc<crate::store_client::StoreClient>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Other replicas' spool directories, adopted when their owner is gone.
    pub peers: Vec<PathBuf>,
}

/// Records replayed from an adopted spool before letting go of it, so its
/// owner, restarting, waits at most one batch for the lock.
const ADOPT_BATCH: u64 = 500;

/// Records per replay batch, and bytes (the first record always).
const BATCH_EVENTS: usize = 64;
const BATCH_BYTES: u64 = 8 << 20;

/// Records of one batch in flight to the store at once: one, so the store
/// commits them in the order ingest acknowledged them (concurrent sends
/// could reorder them, and a routing rule that supersedes by entity would
/// then let an older event replace a newer one's task).
const CONCURRENCY: usize = 1;

impl Replayer {
    /// Sends waiting events until the spool is empty or the store fails;
    /// returns how many the store committed.
    pub async fn step(&self) -> anyhow::Result<u64> {
        self.replay(self.spool.clone(), u64::MAX, None).await
    }

    /// Replays the spools of peers that are gone (unlocked, not empty), a
    /// bounded batch each; returns how many events the store committed.
    pub async fn adopt_step(&self) -> anyhow::Result<u64> {
        let mut replayed = 0;
        for dir in &self.peers {
            let dir = dir.clone();
            let Some(spool) = tokio::task::spawn_blocking(move || Spool::try_adopt(&dir)).await??
            else {
                continue;
            };
            let spool = Arc::new(spool);
            let n = self.replay(spool.clone(), ADOPT_BATCH, None).await?;
            self.metrics.spool_adopted.inc_by(n);
            tracing::warn!(
                dir = %spool.dir().display(),
                replayed = n,
                waiting = spool.depth().events,
                "spool: replayed events from the spool of a replica that is gone"
            );
            replayed += n;
        }
        Ok(replayed)
    }

    /// Sends up to `limit` of `spool`'s events, oldest first, a batch at a
    /// time, until it is empty, the store fails or `stopping()`.
    async fn replay(
        &self,
        spool: Arc<Spool>,
        limit: u64,
        stop: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> anyhow::Result<u64> {
        let mut replayed = 0;
        let result = loop {
            let stopping = stop.as_ref().is_some_and(|s| *s.borrow());
            if replayed >= limit || stopping {
                break Ok(replayed);
            }
            let want = (limit - replayed).min(BATCH_EVENTS as u64) as usize;
            let batch = tokio::task::spawn_blocking({
                let spool = spool.clone();
                move || spool.peek_batch(want, BATCH_BYTES)
            })
            .await??;
            if batch.is_empty() {
                break Ok(replayed);
            }
            if spool.depth().events <= batch.len() as u64 {
                // The last of the backlog: new deliveries wait for it rather
                // than queue behind it, so the spool empties under load.
                spool.close_tail();
            }
            match self.replay_batch(&spool, batch).await {
                Ok((n, true)) => replayed += n,
                Ok((n, false)) => break Ok(replayed + n),
                Err(e) => break Err(e),
            }
        };
        spool.open_tail();
        result
    }

    /// Sends one batch together and marks the longest replayed prefix;
    /// (committed, whether the store took all of it).
    async fn replay_batch(
        &self,
        spool: &Arc<Spool>,
        batch: Vec<super::Next>,
    ) -> anyhow::Result<(u64, bool)> {
        // Each payload moves into a `Bytes` once; sending and keeping a
        // refused one share it.
        let (ends, payloads): (Vec<u64>, Vec<actix_web::web::Bytes>) = batch
            .into_iter()
            .map(|next| (next.end, next.payload.into()))
            .unzip();
        let store = self.store.clone();
        let results: Vec<_> = futures_util::stream::iter(payloads.clone())
            .map(move |payload| {
                let store = store.clone();
                async move { store.store(payload).await }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let (mut done, mut committed, mut refused) = (None, 0, Vec::new());
        let mut complete = true;
        for ((end, payload), result) in ends.into_iter().zip(payloads).zip(results) {
            match result {
                Ok(_) => committed += 1,
                Err(IngestError::StoreUnavailable { cause, .. }) => {
                    tracing::info!(
                        waiting = spool.depth().events,
                        error = format!("{cause:#}"),
                        "spool: dedup-store still unreachable"
                    );
                    // Those after it may have been stored too: they are sent
                    // again, and deduplicated.
                    complete = false;
                    break;
                }
                Err(e) => refused.push((payload, format!("{:#}", anyhow::Error::new(e)))),
            }
            done = Some(end);
        }
        let Some(end) = done else {
            return Ok((0, false));
        };
        let rejected = refused.len() as u64;
        tokio::task::spawn_blocking({
            let spool = spool.clone();
            move || -> std::io::Result<()> {
                for (payload, why) in refused {
                    spool.keep_refused(&payload, &why)?;
                }
                spool.advance_to(end)
            }
        })
        .await??;
        self.metrics.spool_replayed.inc_by(committed);
        self.metrics.spool_rejected.inc_by(rejected);
        Ok((committed, complete))
    }

    /// Replays while anything waits, at once and then every `interval`,
    /// and looks at the peers' spools, until `stop` (which ends a replay
    /// between batches: the rest waits for the next process).
    pub async fn run(
        self,
        interval: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A tick first: a replay under way checks `stop` itself,
                // between batches.
                biased;
                _ = ticks.tick() => {}
                _ = rave_service::served::stopping(&mut stop) => return,
            }
            if !self.peers.is_empty()
                && let Err(e) = self.adopt_step().await
            {
                tracing::error!(
                    error = format!("{e:#}"),
                    "spool: replaying a peer's spool failed"
                );
            }
            if self.spool.is_empty() {
                continue;
            }
            match self
                .replay(self.spool.clone(), u64::MAX, Some(stop.clone()))
                .await
            {
                Ok(n) if n > 0 => tracing::info!(
                    replayed = n,
                    waiting = self.spool.depth().events,
                    "spool: replayed"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = format!("{e:#}"), "spool: replay failed"),
            }
        }
    }
}
