//! Replays' audit records (`replays`) and what they select from this
//! database: the task ids of ignored or quarantined events.

use rave_pg::{Pool, Prepared};
use serde::Serialize;
use time::OffsetDateTime;

/// A replay as recorded: who ran what, and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayRecord {
    pub request_id: String,
    pub filter: serde_json::Value,
    pub max_events: i32,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub counts: ReplayCounts,
    pub next_after: Option<i64>,
}

/// What a replay did with the events it matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReplayCounts {
    pub matched: i32,
    pub created: i32,
    pub ignored: i32,
    pub duplicates: i32,
    pub quarantined: i32,
}

const COLUMNS: &str =
    "request_id, filter, max_events, requested_by, started_at, until_at, finished_at,
                       matched, created, ignored, duplicates, quarantined, next_after";

fn record(row: &tokio_postgres::Row) -> ReplayRecord {
    ReplayRecord {
        request_id: row.get(0),
        filter: row.get(1),
        max_events: row.get(2),
        requested_by: row.get(3),
        started_at: row.get(4),
        until_at: row.get(5),
        finished_at: row.get(6),
        counts: ReplayCounts {
            matched: row.get(7),
            created: row.get(8),
            ignored: row.get(9),
            duplicates: row.get(10),
            quarantined: row.get(11),
        },
        next_after: row.get(12),
    }
}

/// A new replay's record, or the one this request id already has.
#[derive(Debug)]
pub enum Begun {
    New(ReplayRecord),
    Existing(ReplayRecord),
}

/// Records a replay before it runs (committed at once: the record, not a
/// transaction, spans the replay's HTTP calls).
pub async fn begin_replay(
    pool: &Pool,
    request_id: &str,
    filter: &serde_json::Value,
    max_events: i32,
    requested_by: &str,
    now: OffsetDateTime,
    until: OffsetDateTime,
) -> anyhow::Result<Begun> {
    let client = pool.get().await?;
    let inserted = client
        .query_opt_prepared(
            &format!(
                "INSERT INTO replays (request_id, filter, max_events, requested_by, started_at, until_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (request_id) DO NOTHING
                 RETURNING {COLUMNS}"
            ),
            &[&request_id, filter, &max_events, &requested_by, &now, &until],
        )
        .await?;
    if let Some(row) = inserted {
        return Ok(Begun::New(record(&row)));
    }
    let row = client
        .query_one_prepared(
            &format!("SELECT {COLUMNS} FROM replays WHERE request_id = $1"),
            &[&request_id],
        )
        .await?;
    Ok(Begun::Existing(record(&row)))
}

/// Marks a replay finished with what it did.
pub async fn finish_replay(
    pool: &Pool,
    request_id: &str,
    counts: ReplayCounts,
    next_after: Option<i64>,
    now: OffsetDateTime,
) -> anyhow::Result<ReplayRecord> {
    let client = pool.get().await?;
    let row = client
        .query_one_prepared(
            &format!(
                "UPDATE replays SET finished_at = $2, matched = $3, created = $4, ignored = $5,
                        duplicates = $6, quarantined = $7, next_after = $8
                 WHERE request_id = $1
                 RETURNING {COLUMNS}"
            ),
            &[
                &request_id,
                &now,
                &counts.matched,
                &counts.created,
                &counts.ignored,
                &counts.duplicates,
                &counts.quarantined,
                &next_after,
            ],
        )
        .await?;
    Ok(record(&row))
}

pub async fn get_replay(pool: &Pool, request_id: &str) -> anyhow::Result<Option<ReplayRecord>> {
    let client = pool.get().await?;
    let row = client
        .query_opt_prepared(
            &format!("SELECT {COLUMNS} FROM replays WHERE request_id = $1"),
            &[&request_id],
        )
        .await?;
    Ok(row.as_ref().map(record))
}

/// The tasks a replay created (or ignore records it wrote), in a page.
pub async fn replayed_tasks(
    pool: &Pool,
    request_id: &str,
    limit: i64,
) -> anyhow::Result<Vec<(String, String)>> {
    let client = pool.get().await?;
    let rows = client
        .query_prepared(
            "SELECT task_id, original_task_id FROM replayed_tasks
             WHERE request_id = $1 ORDER BY original_task_id LIMIT $2",
            &[&request_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The replay that made `task_id`, if a replay did: (request id, original
/// task id).
pub async fn replay_of(pool: &Pool, task_id: &str) -> anyhow::Result<Option<(String, String)>> {
    let client = pool.get().await?;
    let row = client
        .query_opt_prepared(
            "SELECT request_id, original_task_id FROM replayed_tasks WHERE task_id = $1",
            &[&task_id],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Which of the dispatcher's own records a replay draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Recorded {
    Ignored,
    Quarantined,
}

/// Where a walk through ignored or quarantined events has got to: the
/// record's time and task id.
pub type RecordedCursor = (OffsetDateTime, String);

/// Task ids of ignored or quarantined events (of `source`, of one of
/// `types` when given) after `after`, at most `limit`, oldest first, each
/// with its cursor.
pub async fn recorded_task_ids(
    pool: &Pool,
    which: Recorded,
    source: Option<&str>,
    types: &[String],
    after: Option<&RecordedCursor>,
    limit: i64,
) -> anyhow::Result<Vec<RecordedCursor>> {
    let client = pool.get().await?;
    // Both statements fixed here; only the table differs.
    let (table, at) = match which {
        Recorded::Ignored => ("ignored_events", "ignored_at"),
        Recorded::Quarantined => ("quarantined_events", "quarantined_at"),
    };
    let (after_at, after_id) = (after.map(|c| c.0), after.map(|c| c.1.as_str()));
    let rows = client
        .query_prepared(
            &format!(
                "SELECT {at}, task_id FROM {table}
                 WHERE task_id IS NOT NULL
                   AND ($1::text IS NULL OR source = $1)
                   AND (cardinality($2::text[]) = 0 OR event_type = ANY($2))
                   AND ($3::timestamptz IS NULL OR ({at}, task_id) > ($3, $4::text))
                 ORDER BY {at}, task_id LIMIT $5"
            ),
            &[&source, &types, &after_at, &after_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
