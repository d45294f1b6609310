//! The operators' side: task and history reads, listings, ignored events,
//! cancel and retry.

use rave_pg::{GenericClient, Pool};
use rave_service::ids::TaskId;
use serde::Serialize;
use time::OffsetDateTime;

use super::WAKE_CHANNEL;

/// What an operator's cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// It was queued: now cancelled.
    Cancelled,
    /// It is leased: its agent is told at the next heartbeat.
    Requested,
    /// It had finished already; nothing changed.
    AlreadyFinished,
    NotFound,
}

pub async fn cancel(
    pool: &Pool,
    task_id: &TaskId,
    now: OffsetDateTime,
) -> anyhow::Result<CancelOutcome> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "WITH target AS (SELECT task_id, state FROM tasks WHERE task_id = $1 FOR UPDATE)
             UPDATE tasks t SET
                 state = CASE WHEN target.state = 'queued' THEN 'cancelled' ELSE t.state END,
                 finished_at = CASE WHEN target.state = 'queued' THEN $2 ELSE t.finished_at END,
                 cancel_requested = t.cancel_requested OR target.state IN ('queued', 'leased'),
                 cancel_reason = CASE WHEN target.state IN ('queued', 'leased') THEN 'cancelled'
                                      ELSE t.cancel_reason END,
                 updated_at = $2
             FROM target WHERE t.task_id = target.task_id
             RETURNING target.state",
            &[&task_id.as_str(), &now],
        )
        .await?;
    Ok(match row.map(|r| r.get::<_, String>(0)).as_deref() {
        None => CancelOutcome::NotFound,
        Some("queued") => CancelOutcome::Cancelled,
        Some("leased") => CancelOutcome::Requested,
        Some(_) => CancelOutcome::AlreadyFinished,
    })
}

/// Puts a dead or failed task back in the queue with fresh attempts.
/// Returns the state it was in, or `None` when there is no such task.
pub async fn retry(
    pool: &Pool,
    task_id: &TaskId,
    now: OffsetDateTime,
) -> anyhow::Result<Option<(String, bool)>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "WITH target AS (SELECT task_id, state FROM tasks WHERE task_id = $1 FOR UPDATE)
             UPDATE tasks t SET
                 state = CASE WHEN target.state IN ('dead', 'failed') THEN 'queued' ELSE t.state END,
                 attempt = CASE WHEN target.state IN ('dead', 'failed') THEN 0 ELSE t.attempt END,
                 unacknowledged_leases = CASE WHEN target.state IN ('dead', 'failed') THEN 0 ELSE t.unacknowledged_leases END,
                 run = CASE WHEN target.state IN ('dead', 'failed') THEN t.run + 1 ELSE t.run END,
                 run_at = CASE WHEN target.state IN ('dead', 'failed') THEN $2 ELSE t.run_at END,
                 finished_at = CASE WHEN target.state IN ('dead', 'failed') THEN NULL ELSE t.finished_at END,
                 lease_token = CASE WHEN target.state IN ('dead', 'failed') THEN NULL ELSE t.lease_token END,
                 updated_at = $2
             FROM target WHERE t.task_id = target.task_id
             RETURNING target.state",
            &[&task_id.as_str(), &now],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let was: String = row.get(0);
    let retried = was == "dead" || was == "failed";
    if retried {
        client
            .execute("SELECT pg_notify($1, '')", &[&WAKE_CHANNEL])
            .await?;
    }
    Ok(Some((was, retried)))
}

/// A task as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub seq: i64,
    pub kind: String,
    pub state: String,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub source: String,
    pub event_uuid: String,
    pub event_type: String,
    pub entity_key: Option<String>,
    pub policy: String,
    pub agent_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub run_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    pub cancel_requested: bool,
    pub cancel_reason: Option<String>,
    pub traceparent: Option<String>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

const TASK_COLUMNS: &str = "task_id, seq, kind, state, priority, attempt, max_attempts, source, event_uuid,
    event_type, entity_key, policy, agent_id, run_at, lease_expires_at, cancel_requested, cancel_reason,
    traceparent, result, error, created_at, finished_at";

fn task_record(r: &tokio_postgres::Row) -> TaskRecord {
    TaskRecord {
        task_id: r.get(0),
        seq: r.get(1),
        kind: r.get(2),
        state: r.get(3),
        priority: r.get(4),
        attempt: r.get(5),
        max_attempts: r.get(6),
        source: r.get(7),
        event_uuid: r.get(8),
        event_type: r.get(9),
        entity_key: r.get(10),
        policy: r.get(11),
        agent_id: r.get(12),
        run_at: r.get(13),
        lease_expires_at: r.get(14),
        cancel_requested: r.get(15),
        cancel_reason: r.get(16),
        traceparent: r.get(17),
        result: r.get(18),
        error: r.get(19),
        created_at: r.get(20),
        finished_at: r.get(21),
    }
}

/// One attempt in a task's history.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    /// 1, then one more per operator retry.
    pub run: i32,
    pub attempt: i32,
    pub agent_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub claimed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub outcome: Option<String>,
    pub error: Option<String>,
}

pub async fn get_task(
    pool: &Pool,
    task_id: &TaskId,
) -> anyhow::Result<Option<(TaskRecord, Vec<AttemptRecord>)>> {
    let client = pool.get().await?;
    let Some(row) = client
        .query_opt(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1"),
            &[&task_id.as_str()],
        )
        .await?
    else {
        return Ok(None);
    };
    let attempts = client
        .query(
            "SELECT run, attempt, agent_id, claimed_at, ended_at, outcome, error FROM task_attempts
             WHERE task_id = $1 ORDER BY run, attempt",
            &[&task_id.as_str()],
        )
        .await?
        .iter()
        .map(|r| AttemptRecord {
            run: r.get(0),
            attempt: r.get(1),
            agent_id: r.get(2),
            claimed_at: r.get(3),
            ended_at: r.get(4),
            outcome: r.get(5),
            error: r.get(6),
        })
        .collect();
    Ok(Some((task_record(&row), attempts)))
}

/// Filters for the operators' listing.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFilter {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub entity_key: Option<String>,
    #[serde(default)]
    pub after: i64,
    pub limit: Option<i64>,
}

pub async fn list_tasks(
    pool: &Pool,
    f: &TaskFilter,
    limit: i64,
) -> anyhow::Result<Vec<TaskRecord>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks
                 WHERE seq > $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR kind = $3)
                   AND ($4::text IS NULL OR entity_key = $4)
                 ORDER BY seq LIMIT $5"
            ),
            &[&f.after, &f.state, &f.kind, &f.entity_key, &limit],
        )
        .await?;
    Ok(rows.iter().map(task_record).collect())
}

/// An event no routing rule matched.
#[derive(Debug, Clone, Serialize)]
pub struct IgnoredRecord {
    pub task_id: String,
    pub source: String,
    pub event_uuid: String,
    pub event_type: String,
    /// Unix seconds.
    pub ignored_at: i64,
}

/// The latest ignored events, newest first.
pub async fn list_ignored(pool: &Pool, limit: i64) -> anyhow::Result<Vec<IgnoredRecord>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT task_id, source, event_uuid, event_type, ignored_at FROM ignored_events
             ORDER BY ignored_at DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| IgnoredRecord {
            task_id: r.get(0),
            source: r.get(1),
            event_uuid: r.get(2),
            event_type: r.get(3),
            ignored_at: r.get::<_, OffsetDateTime>(4).unix_timestamp(),
        })
        .collect())
}
