//! Waking waiting claims without each of them polling the database.
//!
//! A claim registers with the [`Waker`] (its kinds, how many tasks it takes)
//! before it looks for work, and sleeps if it finds none. New work wakes
//! only as many registered claims as it can feed, oldest first, per kind:
//! (a) at once on the replica whose hand-off created it, (b) on the other
//! replicas by `NOTIFY rave_tasks` with the kinds and counts (`payload`),
//! received on each replica's single LISTEN connection, and (c) by one poll
//! loop that asks, for the kinds claims wait for, how many tasks are due —
//! retries falling due and missed notifications. A reconnect, a stop or a
//! notification without counts wakes every claim. Notifications are hints;
//! the claim statement decides.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use rave_pg::{DatabaseSettings, Pool};
use rave_service::ids::TaskKind;
use rave_service::served::stopping;
use tokio::sync::{Notify, watch};
use tokio_postgres::AsyncMessage;

use crate::clock::Clock;
use crate::store::{self, WAKE_CHANNEL};

#[derive(Debug)]
pub struct Waker {
    registered: Mutex<Registered>,
    waiting: AtomicUsize,
    closed: AtomicBool,
    /// LISTEN connections established so far.
    listens: watch::Sender<u64>,
    /// This replica's name in the notifications it sends: it woke its own
    /// claims when it sent them, so it skips them when they come back.
    origin: String,
}

/// Claims looking for work, oldest first.
#[derive(Debug, Default)]
struct Registered {
    next_id: u64,
    claims: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    kinds: Vec<String>,
    capacity: usize,
    notify: Arc<Notify>,
}

impl Default for Waker {
    fn default() -> Self {
        Self {
            registered: Mutex::new(Registered::default()),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            listens: watch::channel(0).0,
            origin: hex::encode(rave_service::crypto::random_bytes::<6>()),
        }
    }
}

/// A claim's place among those waiting for work. Taken *before* the claim
/// looks for work, so a wake-up in between is kept, not missed; dropped
/// when the claim answers.
#[derive(Debug)]
pub struct Ticket<'a> {
    waker: &'a Waker,
    id: u64,
    notify: Arc<Notify>,
}

impl Ticket<'_> {
    /// Until this claim is woken (at once if it was woken meanwhile).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.waker.lock().claims.retain(|e| e.id != self.id);
    }
}

impl Waker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registered> {
        // A panic while holding it leaves plain data behind: still usable.
        self.registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This replica's name in its notifications.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Registers a claim for up to `capacity` tasks of `kinds`.
    pub fn register(&self, kinds: &[TaskKind], capacity: usize) -> Ticket<'_> {
        let notify = Arc::new(Notify::new());
        let mut registered = self.lock();
        let id = registered.next_id;
        registered.next_id += 1;
        registered.claims.push(Entry {
            id,
            kinds: kinds.iter().map(ToString::to_string).collect(),
            capacity: capacity.max(1),
            notify: notify.clone(),
        });
        Ticket {
            waker: self,
            id,
            notify,
        }
    }

    /// Every registered claim looks again: work of any kind may be due (a
    /// reconnect, an operator's retry, a stop).
    pub fn wake(&self) {
        for entry in self.lock().claims.drain(..) {
            entry.notify.notify_one();
        }
    }

    /// New work, as (kind, tasks): wakes as many registered claims as it
    /// takes to take it, oldest first; the others sleep on. A woken claim
    /// leaves the register; if it finds nothing it registers again.
    pub fn wake_for(&self, work: &[(String, usize)]) {
        let mut left: HashMap<&str, usize> = HashMap::new();
        for (kind, n) in work {
            *left.entry(kind.as_str()).or_default() += n;
        }
        let mut registered = self.lock();
        registered.claims.retain(|entry| {
            if left.values().all(|n| *n == 0) {
                return true;
            }
            let mut capacity = entry.capacity;
            let mut takes = false;
            for kind in &entry.kinds {
                if let Some(n) = left.get_mut(kind.as_str())
                    && *n > 0
                {
                    let taken = (*n).min(capacity);
                    *n -= taken;
                    capacity -= taken;
                    takes = true;
                }
            }
            if takes {
                entry.notify.notify_one();
            }
            !takes
        });
    }

    /// The kinds registered claims wait for, and how many tasks they would
    /// take at most (for the due-task poll).
    pub fn wanted(&self) -> (Vec<String>, usize) {
        let registered = self.lock();
        let mut kinds: Vec<String> = registered
            .claims
            .iter()
            .flat_map(|e| e.kinds.iter().cloned())
            .collect();
        kinds.sort();
        kinds.dedup();
        let capacity = registered.claims.iter().map(|e| e.capacity).sum();
        (kinds, capacity)
    }

    /// The service is stopping: every waiting claim is woken to answer at
    /// once, and none waits again, so no long poll holds the stop up.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
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

/// The payload of a wake-up notification: the sending replica, then each
/// kind with its number of new tasks (`origin kind=n kind=n`). Kinds are
/// routing names (no spaces, no `=`).
pub fn payload(origin: &str, work: &[(String, usize)]) -> String {
    let mut text = origin.to_owned();
    for (kind, n) in work {
        text.push_str(&format!(" {kind}={n}"));
    }
    // NOTIFY payloads stop at 8000 bytes: past that, wake everyone.
    if text.len() > 7900 {
        return String::new();
    }
    text
}

/// What a notification asks of this replica: nothing (its own), some work,
/// or everyone (an empty or unreadable payload, as older releases send).
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Own,
    Work(Vec<(String, usize)>),
    All,
}

pub fn parse_payload(own: &str, text: &str) -> Wake {
    let mut parts = text.split(' ');
    let Some(origin) = parts.next().filter(|o| !o.is_empty()) else {
        return Wake::All;
    };
    if origin == own {
        return Wake::Own;
    }
    let work: Option<Vec<(String, usize)>> = parts
        .map(|p| {
            let (kind, n) = p.split_once('=')?;
            Some((kind.to_owned(), n.parse().ok()?))
        })
        .collect();
    match work {
        Some(work) if !work.is_empty() => Wake::Work(work),
        _ => Wake::All,
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
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = notified.send(n.payload().to_owned());
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
                Some(text) => match parse_payload(waker.origin(), &text) {
                    Wake::Own => {}
                    Wake::Work(work) => waker.wake_for(&work),
                    Wake::All => waker.wake(),
                },
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

/// While claims wait, asks once per `interval` which of the kinds they
/// wait for have due tasks (retries falling due, missed notifications),
/// and wakes as many as those tasks need. A due task no waiting claim can
/// take wakes none.
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
        let (kinds, capacity) = waker.wanted();
        if kinds.is_empty() {
            continue;
        }
        match store::due_for(&pool, clock.now(), &kinds, capacity).await {
            Ok(work) => waker.wake_for(&work),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "checking for due tasks failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(names: &[&str]) -> Vec<TaskKind> {
        names.iter().map(|n| TaskKind::parse(*n).unwrap()).collect()
    }

    fn work(pairs: &[(&str, usize)]) -> Vec<(String, usize)> {
        pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    }

    #[test]
    fn new_work_wakes_only_the_claims_it_can_feed_oldest_first_per_kind() {
        let waker = Waker::default();
        let review_a = waker.register(&kinds(&["review"]), 1);
        let build_a = waker.register(&kinds(&["build"]), 5);
        let review_b = waker.register(&kinds(&["review"]), 1);
        let both = waker.register(&kinds(&["review", "build"]), 2);
        waker.wake_for(&work(&[("review", 2), ("build", 3)]));
        // review: a takes 1, b takes 1; build: build_a takes all 3.
        let remaining: Vec<u64> = waker.lock().claims.iter().map(|e| e.id).collect();
        assert_eq!(remaining, [both.id]);
        drop((review_a, build_a, review_b));
        waker.wake_for(&work(&[("triage", 4)]));
        assert_eq!(waker.wanted().1, 2, "work nobody waits for wakes nobody");
        waker.wake();
        assert!(waker.lock().claims.is_empty());
    }

    #[test]
    fn a_payload_names_its_replica_and_an_unreadable_one_wakes_everyone() {
        let text = payload("r1", &work(&[("review", 2), ("build", 1)]));
        assert_eq!(text, "r1 review=2 build=1");
        assert_eq!(parse_payload("r1", &text), Wake::Own);
        assert_eq!(
            parse_payload("r2", &text),
            Wake::Work(work(&[("review", 2), ("build", 1)]))
        );
        assert_eq!(parse_payload("r2", ""), Wake::All);
        assert_eq!(parse_payload("r2", "r1 review=many"), Wake::All);
        assert_eq!(parse_payload("r2", "r1"), Wake::All);
        let many: Vec<(String, usize)> = (0..2000).map(|i| (format!("kind-{i}"), 1)).collect();
        assert_eq!(
            payload("r1", &many),
            "",
            "too long for NOTIFY: wake everyone"
        );
    }
}
