//! Leases: heartbeats that extend them, why a lease-holding call is
//! refused, and the expiry of leases whose agent went quiet.

use std::time::Duration;

use rave_pg::{GenericClient, Pool, Prepared};
use rave_service::ids::{AgentId, LeaseToken, TaskId, TaskKind};
use serde::Serialize;
use time::OffsetDateTime;

use super::secs;

/// The reply to a heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct Heartbeat {
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
    /// The agent should stop: the task was cancelled or superseded.
    pub cancel_requested: bool,
    pub cancel_reason: Option<String>,
}

/// Why a lease-holding call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    /// Not leased to this agent with this token (any more).
    LeaseLost,
    /// PostgreSQL refused a value the call carried (its batch was split to
    /// find it; the others in the batch went through).
    Unstorable,
}

pub(super) async fn refusal(
    client: &impl GenericClient,
    task_id: &TaskId,
) -> anyhow::Result<Refusal> {
    let exists = client
        .query_opt_prepared(
            "SELECT 1 FROM tasks WHERE task_id = $1",
            &[&task_id.as_str()],
        )
        .await?;
    Ok(if exists.is_some() {
        Refusal::LeaseLost
    } else {
        Refusal::NotFound
    })
}

pub async fn heartbeat(
    pool: &Pool,
    task_id: &TaskId,
    token: &LeaseToken,
    agent: &AgentId,
    now: OffsetDateTime,
    lease: Duration,
) -> anyhow::Result<Result<Heartbeat, Refusal>> {
    let client = pool.get().await?;
    let row = client
        .query_opt_prepared(
            "UPDATE tasks SET lease_expires_at = $4 + make_interval(secs => $5), updated_at = $4,
                    lease_acknowledged = true
             WHERE task_id = $1 AND state = 'leased' AND lease_token = $2 AND agent_id = $3
               AND lease_expires_at >= $4
             RETURNING lease_expires_at, cancel_requested, cancel_reason",
            &[
                &task_id.as_str(),
                &token.as_str(),
                &agent.as_str(),
                &now,
                &secs(lease),
            ],
        )
        .await?;
    Ok(match row {
        Some(row) => Ok(Heartbeat {
            lease_expires_at: row.get(0),
            cancel_requested: row.get(1),
            cancel_reason: row.get(2),
        }),
        None => Err(refusal(&client, task_id).await?),
    })
}

/// A lease that ran out.
#[derive(Debug, Clone)]
pub struct LostLease {
    pub task_id: TaskId,
    pub kind: TaskKind,
    /// queued again, dead (no attempts left) or cancelled (cancel requested).
    pub state: String,
}

/// Returns tasks whose lease expired before `now` to the queue (or to dead
/// or cancelled), at most `batch` of them. A lease the agent never
/// acknowledged (no heartbeat, no result: the claim's answer may never have
/// reached it) does not count as an attempt; after `max_unacknowledged` of
/// those the task is dead all the same (an agent that dies on it before
/// its first heartbeat looks no different).
pub async fn expire_leases(
    pool: &Pool,
    origin: &str,
    now: OffsetDateTime,
    batch: i64,
    max_unacknowledged: i32,
) -> anyhow::Result<Vec<LostLease>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query_prepared(
            "WITH expired AS (
                 SELECT task_id FROM tasks WHERE state = 'leased' AND lease_expires_at < $1
                 ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
             ), lost AS (
                 UPDATE tasks t
                 SET state = CASE WHEN t.cancel_requested THEN 'cancelled'
                                  WHEN NOT t.lease_acknowledged
                                       AND t.unacknowledged_leases + 1 >= $3 THEN 'dead'
                                  WHEN t.lease_acknowledged
                                       AND t.attempt - t.unacknowledged_leases >= t.max_attempts THEN 'dead'
                                  ELSE 'queued' END,
                     finished_at = CASE WHEN t.cancel_requested
                                         OR (NOT t.lease_acknowledged AND t.unacknowledged_leases + 1 >= $3)
                                         OR (t.lease_acknowledged AND t.attempt - t.unacknowledged_leases >= t.max_attempts)
                                        THEN $1 END,
                     unacknowledged_leases = t.unacknowledged_leases + CASE WHEN t.lease_acknowledged THEN 0 ELSE 1 END,
                     run_at = $1, lease_token = NULL, lease_expires_at = NULL, agent_id = NULL,
                     error = CASE WHEN t.lease_acknowledged THEN 'lease lost'
                                  ELSE 'lease expired before the agent acknowledged it' END,
                     updated_at = $1
                 FROM expired e WHERE t.task_id = e.task_id
                 RETURNING t.task_id, t.kind, t.state, t.error
             ), attempts AS (
                 UPDATE task_attempts a SET ended_at = $1, outcome = 'lease_lost', error = l.error
                 FROM lost l WHERE a.task_id = l.task_id AND a.ended_at IS NULL
             )
             SELECT task_id, kind, state FROM lost",
            &[&now, &batch, &max_unacknowledged],
        )
        .await?;
    let requeued = rows
        .iter()
        .filter(|r| r.get::<_, &str>(2) == "queued")
        .map(|r| r.get::<_, &str>(1));
    super::notify_work(&tx, origin, requeued).await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(LostLease {
                task_id: TaskId::parse(r.get::<_, String>(0))?,
                kind: TaskKind::parse(r.get::<_, String>(1))?,
                state: r.get(2),
            })
        })
        .collect()
}
