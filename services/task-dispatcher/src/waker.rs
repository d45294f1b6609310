//! Waking waiting claims without each of them polling the database.
//!
//! A claim that finds nothing subscribes to the [`Waker`] and sleeps. It is
//! woken (a) at once by a hand-off on this replica, (b) by `NOTIFY
//! rave_tasks` from any replica, received on this replica's single LISTEN
//! connection, and (c) by one poll loop that asks "is any task due?" once per
//! interval while anyone waits — retries falling due and missed
//! notifications. Notifications are hints; the claim statement decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use rave_pg::{DatabaseSettings, Pool};
use rave_service::served::stopping;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use crate::clock::Clock;
use crate::store::{self, WAKE_CHANNEL};

#[derive(Debug)]
pub struct Waker {
    version: watch::Sender<u64>,
    waiting: AtomicUsize,
    closed: AtomicBool,
    /// LISTEN connections established so far.
    listens: watch::Sender<u64>,
}

impl Default for Waker {
    fn default() -> Self {
        Self {
            version: watch::channel(0).0,
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            listens: watch::channel(0).0,
        }
    }
}

impl Waker {
    pub fn wake(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The service is stopping: every parked claim is woken to answer at
    /// once, and none parks again, so no long poll holds the stop up.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Subscribe *before* looking for work, so no wake-up is missed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Counts a waiting claim for as long as the guard lives.
    pub fn waiting_guard(&self) -> WaitingGuard<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        WaitingGuard(self)
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Counts LISTEN connections as they are established (tests wait on it).
    pub fn listens(&self) -> watch::Receiver<u64> {
        self.listens.subscribe()
    }
}

#[derive(Debug)]
pub struct WaitingGuard<'a>(&'a Waker);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How the LISTEN connection is checked.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Holds one LISTEN connection, reconnecting with backoff, until `stop`.
pub async fn listen(
    database: DatabaseSettings,
    probe: Probe,
    waker: Arc<Waker>,
    lost: prometheus_client::metrics::counter::Counter,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            result = listen_once(&database, probe, &waker) => {
                lost.inc();
                if let Err(e) = result {
                    tracing::warn!(error = %format!("{e:#}"), "LISTEN connection lost; waiting claims fall back to polling");
                }
            }
            _ = stopping(&mut stop) => return,
        }
        // Anything notified while disconnected is found by the next claim.
        waker.wake();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping(&mut stop) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn listen_once(
    database: &DatabaseSettings,
    probe: Probe,
    waker: &Waker,
) -> anyhow::Result<()> {
    let (client, mut messages) = rave_pg::connect(database, "task-dispatcher-listen").await?;
    let (notified, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = notified.send(());
                }
                Ok(_) => {}
                Err(e) => return Err(anyhow::Error::new(e)),
            }
        }
        Ok(())
    });
    // Dropping the driver's handle does not stop it; aborting does, and
    // closes the socket with it.
    let _driver_guard = AbortOnDrop(driver.abort_handle());
    tokio::time::timeout(
        probe.timeout,
        client.batch_execute(&format!("LISTEN {WAKE_CHANNEL}")),
    )
    .await
    .map_err(|_| anyhow::anyhow!("LISTEN got no answer in {:?}", probe.timeout))??;
    tracing::info!("listening for task notifications");
    waker.listens.send_modify(|n| *n += 1);
    // Missed ticks are skipped, not bunched.
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + probe.interval, probe.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            notification = notifications.recv() => match notification {
                Some(()) => waker.wake(),
                None => break,
            },
            _ = ticker.tick() => {
                // A half-open connection (the peer gone without a FIN, a
                // NAT entry dropped) delivers neither notifications nor an
                // error: only a question that goes unanswered tells.
                match tokio::time::timeout(probe.timeout, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => anyhow::bail!("the LISTEN connection did not answer a probe in {:?}", probe.timeout),
                }
            }
        }
    }
    driver.await?
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// While claims wait, asks once per `interval` whether any task is due.
pub async fn poll(
    pool: Pool,
    clock: Arc<dyn Clock>,
    waker: Arc<Waker>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping(&mut stop) => return,
        }
        if waker.waiting() == 0 {
            continue;
        }
        match store::any_due(&pool, clock.now()).await {
            Ok(true) => waker.wake(),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "checking for due tasks failed"),
        }
    }
}
