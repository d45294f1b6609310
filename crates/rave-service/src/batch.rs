//! Group commit: many concurrent callers, few transactions.
//!
//! Callers [`Batcher::submit`] one item each and wait. `writers` tasks each
//! take one item, then everything else already queued (up to `max_batch`,
//! optionally waiting `max_wait_us` for more), hand the batch to the handler
//! — typically one database transaction — and answer every caller with its
//! own result once the handler returns. While one writer commits, new items
//! pile up and form the next batch, so batches grow with load without adding
//! latency when idle. No application code lives here.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Tuning for one batcher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// Concurrent batches (transactions) at most.
    pub writers: usize,
    /// Items per batch at most.
    pub max_batch: usize,
    /// How long a writer waits for more items before running a batch smaller
    /// than `max_batch`; 0 runs whatever is queued at once.
    pub max_wait_us: u64,
    /// Items queued at most; beyond that `submit` fails at once.
    pub queue_capacity: usize,
    /// Bytes queued or being committed at most (as the batcher's size
    /// function counts them); beyond that `submit` fails at once. One item
    /// larger than this still goes when nothing else is queued.
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: usize,
}

fn default_queue_max_bytes() -> usize {
    256 << 20
}

impl BatchSettings {
    pub fn validate(&self, key: &str) -> Result<(), crate::settings::SettingsError> {
        for (field, value) in [
            ("writers", self.writers),
            ("max_batch", self.max_batch),
            ("queue_capacity", self.queue_capacity),
            ("queue_max_bytes", self.queue_max_bytes),
        ] {
            if value == 0 {
                return Err(crate::settings::SettingsError::invalid(
                    format!("{key}.{field}"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

/// Why an item got no result from its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("the queue is full ({0} items)")]
    QueueFull(usize),
    #[error("the queue is full ({0} bytes)")]
    QueueFullBytes(usize),
    #[error("the batcher stopped before answering")]
    Stopped,
    /// The handler failed; every item of the batch gets the same error.
    #[error("{0:#}")]
    Failed(Arc<anyhow::Error>),
}

/// Runs one batch: one output per item, in order.
pub type Handler<I, O> =
    Arc<dyn Fn(Arc<Vec<I>>) -> BoxFuture<'static, anyhow::Result<Vec<O>>> + Send + Sync>;

/// Where a batcher reports how it is doing.
#[derive(Debug, Clone, Default)]
pub struct BatchMetrics {
    /// Items per batch.
    pub batch_size: Option<Histogram>,
    /// Items submitted and not yet answered.
    pub in_flight: Option<Gauge>,
}

struct Job<I, O> {
    item: I,
    reply: oneshot::Sender<Result<O, BatchError>>,
}

/// How many bytes an item holds while it is queued and committed.
pub type SizeOf<I> = fn(&I) -> usize;

pub struct Batcher<I, O> {
    queue: mpsc::Sender<Job<I, O>>,
    capacity: usize,
    metrics: BatchMetrics,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    size_of: SizeOf<I>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            capacity: self.capacity,
            metrics: self.metrics.clone(),
            bytes: self.bytes.clone(),
            max_bytes: self.max_bytes,
            size_of: self.size_of,
        }
    }
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// The writer tasks behind a [`Batcher`].
#[derive(Debug)]
pub struct Writers {
    handles: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Writers {
    /// Runs what is still queued, then stops the writers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

impl<I: Send + Sync + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the writers on the current runtime; items count no bytes.
    pub fn start(
        settings: &BatchSettings,
        handler: Handler<I, O>,
        metrics: BatchMetrics,
    ) -> (Self, Writers) {
        Self::start_sized(settings, handler, metrics, |_| 0)
    }

    /// Starts the writers; `size_of` says how many of `queue_max_bytes`
    /// an item takes while it waits and while its batch runs.
    pub fn start_sized(
        settings: &BatchSettings,
        handler: Handler<I, O>,
        metrics: BatchMetrics,
        size_of: SizeOf<I>,
    ) -> (Self, Writers) {
        let (queue, receiver) = mpsc::channel(settings.queue_capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let (stop, stopped) = watch::channel(false);
        let handles = (0..settings.writers)
            .map(|_| {
                let writer = Writer {
                    receiver: receiver.clone(),
                    handler: handler.clone(),
                    metrics: metrics.clone(),
                    max_batch: settings.max_batch,
                    max_wait: Duration::from_micros(settings.max_wait_us),
                };
                tokio::spawn(writer.run(stopped.clone()))
            })
            .collect();
        let max_bytes = settings.queue_max_bytes.min(u32::MAX as usize);
        let batcher = Self {
            queue,
            capacity: settings.queue_capacity,
            metrics,
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
            size_of,
        };
        (batcher, Writers { handles, stop })
    }

    /// Queues `item` and waits for its batch's result.
    pub async fn submit(&self, item: I) -> Result<O, BatchError> {
        // Held until the item is answered: the bytes stay in memory that long.
        let size = (self.size_of)(&item).min(self.max_bytes) as u32;
        let _bytes = self
            .bytes
            .try_acquire_many(size)
            .map_err(|_| BatchError::QueueFullBytes(self.max_bytes))?;
        let _in_flight = InFlight::enter(self.metrics.in_flight.as_ref());
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job { item, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BatchError::QueueFull(self.capacity),
                mpsc::error::TrySendError::Closed(_) => BatchError::Stopped,
            })?;
        answer.await.map_err(|_| BatchError::Stopped)?
    }
}

/// Counts an item in flight for as long as it lives, however its future ends.
struct InFlight<'a>(Option<&'a Gauge>);

impl<'a> InFlight<'a> {
    fn enter(gauge: Option<&'a Gauge>) -> Self {
        if let Some(g) = gauge {
            g.inc();
        }
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.dec();
        }
    }
}

struct Writer<I, O> {
    receiver: Arc<Mutex<mpsc::Receiver<Job<I, O>>>>,
    handler: Handler<I, O>,
    metrics: BatchMetrics,
    max_batch: usize,
    max_wait: Duration,
}

impl<I: Send + Sync + 'static, O: Send + 'static> Writer<I, O> {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        loop {
            // A dropped `Writers` (its owner gone) stops them as a stop would.
            let stopping = *stopped.borrow_and_update() || stopped.has_changed().is_err();
            let batch = if stopping {
                self.drain().await
            } else {
                self.next_batch(&mut stopped).await
            };
            if batch.is_empty() {
                if stopping {
                    return;
                }
                continue;
            }
            self.run_batch(batch).await;
        }
    }

    /// Waits for one item, then collects more. A stop while waiting for the
    /// first returns nothing; a stop while collecting ends the collection,
    /// and what was collected is still run (its callers are waiting).
    async fn next_batch(&self, stopped: &mut watch::Receiver<bool>) -> Vec<Job<I, O>> {
        let mut receiver = tokio::select! {
            receiver = self.receiver.lock() => receiver,
            _ = crate::served::stopping(stopped) => return Vec::new(),
        };
        // `recv` is cancel-safe: a stop here takes no item.
        let first = tokio::select! {
            first = receiver.recv() => first,
            _ = crate::served::stopping(stopped) => return Vec::new(),
        };
        let Some(first) = first else {
            return Vec::new();
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.max_wait;
        while batch.len() < self.max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) if self.max_wait.is_zero() => break,
                Err(_) => tokio::select! {
                    job = tokio::time::timeout_at(deadline, receiver.recv()) => match job {
                        Ok(Some(job)) => batch.push(job),
                        _ => break,
                    },
                    _ = crate::served::stopping(stopped) => break,
                },
            }
        }
        batch
    }

    async fn drain(&self) -> Vec<Job<I, O>> {
        let mut receiver = self.receiver.lock().await;
        let mut batch = Vec::new();
        while batch.len() < self.max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch
    }

    async fn run_batch(&self, batch: Vec<Job<I, O>>) {
        if let Some(h) = &self.metrics.batch_size {
            h.observe(batch.len() as f64);
        }
        let (items, replies): (Vec<I>, Vec<_>) =
            batch.into_iter().map(|job| (job.item, job.reply)).unzip();
        let expected = items.len();
        match (self.handler)(Arc::new(items)).await {
            Ok(outputs) if outputs.len() == expected => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Ok(outputs) => {
                let error = Arc::new(anyhow::anyhow!(
                    "batch handler returned {} results for {expected} items",
                    outputs.len()
                ));
                for reply in replies {
                    let _ = reply.send(Err(BatchError::Failed(error.clone())));
                }
            }
            Err(e) => {
                let error = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(BatchError::Failed(error.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(writers: usize, max_batch: usize) -> BatchSettings {
        BatchSettings {
            writers,
            max_batch,
            max_wait_us: 0,
            queue_capacity: 1000,
            queue_max_bytes: 1 << 20,
        }
    }

    #[tokio::test]
    async fn every_caller_gets_its_own_result_and_queued_items_share_a_batch() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let handler: Handler<u32, u32> = Arc::new(move |items: Arc<Vec<u32>>| {
            seen.lock().unwrap().push(items.len());
            Box::pin(async move { Ok(items.iter().map(|i| i * 10).collect()) })
        });
        let (batcher, writers) = Batcher::start(&settings(1, 64), handler, BatchMetrics::default());
        // Submitted together before the single writer runs: one batch.
        let results = futures_util::future::join_all((0..50).map(|i| batcher.submit(i))).await;
        let results: Vec<u32> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results, (0..50).map(|i| i * 10).collect::<Vec<_>>());
        assert!(
            sizes.lock().unwrap().iter().any(|&n| n > 1),
            "{:?}",
            sizes.lock().unwrap()
        );
        assert!(sizes.lock().unwrap().iter().all(|&n| n <= 64));
        writers.shutdown().await;
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_callers() {
        let handler: Handler<u32, u32> =
            Arc::new(|_| Box::pin(async { Err(anyhow::anyhow!("disk on fire")) }));
        let (batcher, writers) = Batcher::start(&settings(2, 8), handler, BatchMetrics::default());
        let err = batcher.submit(1).await.unwrap_err();
        assert!(err.to_string().contains("disk on fire"));
        writers.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_the_queued_items_are_still_answered() {
        use futures_util::FutureExt as _;
        // The handler holds its batch until the gate opens.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (started, mut handling) = mpsc::unbounded_channel();
        let handler: Handler<u32, u32> = {
            let gate = gate.clone();
            Arc::new(move |items| {
                let (gate, started) = (gate.clone(), started.clone());
                Box::pin(async move {
                    let _ = started.send(items.to_vec());
                    let _open = gate.acquire().await?;
                    Ok(items.to_vec())
                })
            })
        };
        let mut s = settings(1, 1);
        s.queue_capacity = 1;
        let (batcher, writers) = Batcher::start(&s, handler, BatchMetrics::default());
        let batcher = Arc::new(batcher);

        // Item 1 is being handled; item 2 fills the queue's one place.
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(1).await }
        });
        assert_eq!(handling.recv().await, Some(vec![1]));
        let mut second = Box::pin(batcher.submit(2));
        assert!(
            second.as_mut().now_or_never().is_none(),
            "2 waits in the queue"
        );

        // Item 3 is refused on its first poll: no waiting for room.
        let third = batcher.submit(3).now_or_never();
        assert!(
            matches!(third, Some(Err(BatchError::QueueFull(1)))),
            "{third:?}"
        );

        gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap(), 2);
        assert_eq!(handling.recv().await, Some(vec![2]));
        writers.shutdown().await;
    }

    #[tokio::test]
    async fn a_stop_while_a_batch_is_being_collected_runs_what_was_collected() {
        let (ran, mut runs) = mpsc::unbounded_channel();
        let handler: Handler<u32, u32> = Arc::new(move |items| {
            let _ = ran.send(items.to_vec());
            Box::pin(async move { Ok(items.to_vec()) })
        });
        let mut s = settings(1, 8);
        // The writer would wait an hour for the batch to fill.
        s.max_wait_us = 3_600_000_000;
        let in_flight = Gauge::default();
        let metrics = BatchMetrics {
            batch_size: None,
            in_flight: Some(in_flight.clone()),
        };
        let (batcher, writers) = Batcher::start(&s, handler, metrics);
        let batcher = Arc::new(batcher);
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(1).await }
        });
        // Item 1 is submitted and out of the queue: the writer holds it and
        // waits for more.
        while in_flight.get() < 1 || batcher.queue.capacity() < s.queue_capacity {
            tokio::task::yield_now().await;
        }
        writers.shutdown().await;
        assert_eq!(first.await.unwrap().unwrap(), 1, "committed, not dropped");
        assert_eq!(runs.recv().await, Some(vec![1]));
    }

    #[tokio::test]
    async fn past_its_byte_bound_the_queue_refuses_at_once_and_an_oversized_item_still_goes_alone()
    {
        use futures_util::FutureExt as _;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let handler: Handler<Vec<u8>, usize> = {
            let gate = gate.clone();
            Arc::new(move |items| {
                let gate = gate.clone();
                Box::pin(async move {
                    let _open = gate.acquire().await?;
                    Ok(items.iter().map(Vec::len).collect())
                })
            })
        };
        let mut s = settings(1, 8);
        s.queue_max_bytes = 100;
        let (batcher, writers) =
            Batcher::start_sized(&s, handler, BatchMetrics::default(), Vec::len);
        // 60 bytes held by a batch that waits on the gate.
        let mut first = Box::pin(batcher.submit(vec![0; 60]));
        assert!(first.as_mut().now_or_never().is_none());
        // 60 more would pass 100: refused on the first poll.
        let second = batcher.submit(vec![0; 60]).now_or_never();
        assert!(
            matches!(second, Some(Err(BatchError::QueueFullBytes(100)))),
            "{second:?}"
        );
        gate.add_permits(2);
        assert_eq!(first.await.unwrap(), 60);
        // With room again, even an item over the bound goes (counted as 100).
        assert_eq!(batcher.submit(vec![0; 500]).await.unwrap(), 500);
        writers.shutdown().await;
    }

    #[tokio::test]
    async fn a_stopped_batcher_says_so() {
        let handler: Handler<u32, u32> =
            Arc::new(|items| Box::pin(async move { Ok(items.to_vec()) }));
        let (batcher, writers) = Batcher::start(&settings(1, 8), handler, BatchMetrics::default());
        writers.shutdown().await;
        assert!(matches!(batcher.submit(1).await, Err(BatchError::Stopped)));
    }

    #[tokio::test]
    async fn writers_whose_owner_drops_their_handle_stop_instead_of_spinning() {
        let handler: Handler<u32, u32> =
            Arc::new(|items| Box::pin(async move { Ok(items.to_vec()) }));
        let (batcher, writers) = Batcher::start(&settings(2, 8), handler, BatchMetrics::default());
        assert_eq!(batcher.submit(7).await.unwrap(), 7);
        let Writers { handles, stop } = writers;
        drop((stop, batcher));
        for handle in handles {
            // Without the stop, a writer that ignored the closed channel
            // would loop forever; the bound only keeps a failure from hanging.
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("the writer stopped")
                .unwrap();
        }
    }
}
