//! Quarantine: events that could not become a task or an ignore record,
//! set aside with their reason so they never block the ones behind them,
//! listed for operators and retried by them.

use rave_pg::Pool;
use serde::Serialize;
use time::OffsetDateTime;

/// Reasons are shown to operators; they are kept storable and short.
const MAX_REASON_BYTES: usize = 2048;

/// An event to set aside.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// `None` when the relayed event carried no readable task id.
    pub task_id: Option<String>,
    pub source: Option<String>,
    pub event_uuid: Option<String>,
    pub event_type: Option<String>,
    pub reason: String,
    /// The relayed event's JSON, as it came.
    pub event: Vec<u8>,
}

/// Records each event (a redelivered one adds an attempt and its latest
/// reason), unless it has a task or an ignore record by now. Returns how
/// many records are new.
pub async fn quarantine(
    pool: &Pool,
    now: OffsetDateTime,
    events: &[Quarantined],
) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO quarantined_events (task_id, source, event_uuid, event_type, reason, event,
                                             quarantined_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $7
             WHERE $1::text IS NULL OR NOT EXISTS (
                 SELECT 1 FROM tasks WHERE task_id = $1
                 UNION ALL SELECT 1 FROM ignored_events WHERE task_id = $1
                 UNION ALL SELECT 1 FROM erased_tasks WHERE task_id = $1)
             ON CONFLICT (task_id) DO UPDATE
                 SET reason = EXCLUDED.reason, attempts = quarantined_events.attempts + 1,
                     updated_at = EXCLUDED.updated_at
             RETURNING (xmax = 0)",
        )
        .await?;
    let mut new = 0;
    for e in events {
        let reason = rave_service::content::storable_text(&e.reason, MAX_REASON_BYTES);
        let rows = client
            .query(
                &statement,
                &[
                    &e.task_id,
                    &e.source,
                    &e.event_uuid,
                    &e.event_type,
                    &reason,
                    &e.event,
                    &now,
                ],
            )
            .await?;
        new += rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64;
    }
    Ok(new)
}

/// A quarantine record as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRecord {
    pub id: i64,
    pub task_id: Option<String>,
    pub source: Option<String>,
    pub event_uuid: Option<String>,
    pub event_type: Option<String>,
    pub reason: String,
    pub attempts: i32,
    /// Unix seconds.
    pub quarantined_at: i64,
    pub updated_at: i64,
}

/// The latest quarantine records, newest first.
pub async fn list_quarantined(pool: &Pool, limit: i64) -> anyhow::Result<Vec<QuarantineRecord>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, task_id, source, event_uuid, event_type, reason, attempts, quarantined_at, updated_at
             FROM quarantined_events ORDER BY quarantined_at DESC, id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| QuarantineRecord {
            id: r.get(0),
            task_id: r.get(1),
            source: r.get(2),
            event_uuid: r.get(3),
            event_type: r.get(4),
            reason: r.get(5),
            attempts: r.get(6),
            quarantined_at: r.get::<_, OffsetDateTime>(7).unix_timestamp(),
            updated_at: r.get::<_, OffsetDateTime>(8).unix_timestamp(),
        })
        .collect())
}

/// The relayed event of quarantine record `id`, to retry it.
pub async fn quarantined_event(pool: &Pool, id: i64) -> anyhow::Result<Option<Vec<u8>>> {
    let client = pool.get().await?;
    let row = client
        .query_opt("SELECT event FROM quarantined_events WHERE id = $1", &[&id])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// How many events are in quarantine now, for the gauge.
pub async fn quarantined_count(pool: &Pool) -> anyhow::Result<i64> {
    let client = pool.get().await?;
    Ok(client
        .query_one("SELECT count(*) FROM quarantined_events", &[])
        .await?
        .get(0))
}

/// A retry that failed again: its latest reason and one more attempt.
pub async fn requarantine(
    pool: &Pool,
    id: i64,
    reason: &str,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let reason = rave_service::content::storable_text(reason, MAX_REASON_BYTES);
    pool.get()
        .await?
        .execute(
            "UPDATE quarantined_events SET reason = $2, attempts = attempts + 1, updated_at = $3
             WHERE id = $1",
            &[&id, &reason, &now],
        )
        .await?;
    Ok(())
}

/// Ends quarantine record `id` (its event has its task or ignore record).
pub async fn release(pool: &Pool, id: i64) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute("DELETE FROM quarantined_events WHERE id = $1", &[&id])
        .await?;
    Ok(())
}
