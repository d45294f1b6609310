//! PostgreSQL access, one file per concern. Every state change is one
//! conditional statement: it applies only from the expected state with the
//! current lease token, so a repeated or late call changes nothing.
//!
//! - `intake`: events from dedup-store's relay become tasks or ignore records;
//! - `claims`: due tasks leased to agents;
//! - `leases`: heartbeats, refusals of a lease not held, expiry of lost leases;
//! - `completions`: completed and failed attempts (retry, dead, cancelled);
//! - `operators`: operators' reads, cancel and retry;
//! - `quarantine`: events set aside with their reason, for operators;
//! - `erasures`: payloads of tasks whose events were erased on request;
//! - `replays`: operators' replays' audit records, and the ignored or
//!   quarantined events they draw from;
//! - `maintenance`: pruning of finished tasks;
//! - `gauges`: task counts and the oldest due task's wait.

use std::time::Duration;

use rave_pg::{Pool, Prepared};

mod embedded {
    refinery::embed_migrations!("migrations");
}

const MIGRATION_LOCK: i64 = 0x7261_7665_7461_736b; // "ravetask"
/// The channel that wakes waiting claims on every replica.
pub const WAKE_CHANNEL: &str = "rave_tasks";

pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    rave_pg::migrate(pool, embedded::migrations::runner(), MIGRATION_LOCK).await
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Tells every replica of new due tasks of `kinds` (one entry per task),
/// inside the caller's transaction, so it is sent only if that commits:
/// the sender and the tasks per kind, for each replica to wake only as
/// many waiting claims as they need.
async fn notify_work<'a>(
    client: &impl Prepared,
    origin: &str,
    kinds: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<()> {
    let work = per_kind(kinds);
    if !work.is_empty() {
        let payload = crate::waker::payload(origin, &work);
        client
            .execute_prepared("SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &payload])
            .await?;
    }
    Ok(())
}

/// Tasks per kind, in order of first appearance (a wake-up's work).
pub fn per_kind<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for kind in kinds {
        match out.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => out.push((kind.to_owned(), 1)),
        }
    }
    out
}

mod claims;
mod completions;
mod erasures;
mod gauges;
mod intake;
mod leases;
mod maintenance;
mod operators;
mod quarantine;
mod replays;

pub use claims::*;
pub use completions::*;
pub use erasures::*;
pub use gauges::*;
pub use intake::*;
pub use leases::*;
pub use maintenance::*;
pub use operators::*;
pub use quarantine::*;
pub use replays::*;
