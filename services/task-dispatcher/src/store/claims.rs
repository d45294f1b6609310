//! Claims: due tasks leased to an agent in one statement.

use std::time::Duration;

use rave_pg::{Pool, Prepared};
use rave_service::ids::{AgentId, LeaseToken, TaskId, TaskKind};
use serde::Serialize;
use time::OffsetDateTime;

use super::secs;

/// A task handed to an agent.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimedTask {
    pub task_id: TaskId,
    pub kind: TaskKind,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub lease_token: LeaseToken,
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
    pub traceparent: Option<String>,
    pub entity_key: Option<String>,
    pub event: ClaimedEvent,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimedEvent {
    pub source: String,
    pub event_uuid: String,
    pub event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub headers: serde_json::Value,
    /// The body as JSON when it is JSON.
    pub payload: Option<serde_json::Value>,
    /// The raw body, byte-exact.
    pub payload_base64: String,
}

/// The claim: `($1 now, $2 kinds, $3 at most, $4 lease seconds, $5 agent,
/// $6 answer bytes)`.
///
/// One ordered index scan per kind (tasks_claimable_idx is (kind,
/// priority, run_at, seq)), each stopping after $3 rows, then the best $3
/// of those: a claim costs O($3), not O(queue). `kind = ANY($2)` in one
/// scan made PostgreSQL read and sort every queued task on each claim
/// (found by `ravectl bench dispatch`).
///
/// Prepared, so shaped for its generic plan, which cannot see $3: nothing
/// is joined to `tasks` or `task_payloads` (a generic plan may hash a whole
/// table for a join, and both hold every finished task until retention).
/// The chosen rows are updated by `ctid` (locked, so they cannot move) and
/// each payload is read by primary key. A task without a payload (erased)
/// is never claimed.
pub const CLAIM: &str = "WITH per_kind AS (
         SELECT t.tid, t.task_id, t.priority, t.run_at, t.seq
         FROM unnest($2::text[]) AS k(kind)
         CROSS JOIN LATERAL (
             SELECT t.ctid AS tid, t.task_id, t.priority, t.run_at, t.seq FROM tasks t
             WHERE t.state = 'queued' AND t.kind = k.kind AND t.run_at <= $1
               AND (t.policy <> 'serialize' OR NOT EXISTS (
                     SELECT 1 FROM tasks o
                     WHERE o.kind = t.kind AND o.entity_key = t.entity_key AND o.policy = 'serialize'
                       AND o.task_id <> t.task_id
                       AND (o.state = 'leased' OR (o.state = 'queued' AND o.seq < t.seq))))
             ORDER BY t.priority, t.run_at, t.seq
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         ) t
     ), best AS MATERIALIZED (
         SELECT b.tid, b.task_id, b.priority, b.run_at, b.seq,
                -- octet_length reads a TOASTed body's size without fetching it.
                (SELECT octet_length(p.body) FROM task_payloads p WHERE p.task_id = b.task_id) AS size
         FROM (SELECT * FROM per_kind ORDER BY priority, run_at, seq LIMIT $3) b
     ), candidates AS (
         -- Whole tasks while the answer stays within $6 bytes (a body
         -- travels as base64); the first always goes, however large.
         SELECT tid FROM (
             SELECT tid,
                    sum(size * 4 / 3 + 1024)
                        OVER (ORDER BY priority, run_at, seq ROWS UNBOUNDED PRECEDING)
                    - (size * 4 / 3 + 1024) AS before
             FROM best WHERE size IS NOT NULL
         ) sized
         WHERE before = 0 OR before < $6
     ), claimed AS (
         UPDATE tasks t
         SET state = 'leased', attempt = t.attempt + 1, lease_acknowledged = false,
             lease_token = replace(gen_random_uuid()::text, '-', ''),
             lease_expires_at = $1 + make_interval(secs => $4), agent_id = $5,
             claimed_at = $1, updated_at = $1
         WHERE t.ctid = ANY (ARRAY(SELECT tid FROM candidates))
         RETURNING t.*
     ), attempts AS (
         INSERT INTO task_attempts (task_id, run, attempt, agent_id, lease_token, claimed_at)
         SELECT task_id, run, attempt, agent_id, lease_token, claimed_at FROM claimed
     )
     SELECT c.task_id, c.kind, c.priority, c.attempt, c.max_attempts, c.lease_token,
            c.lease_expires_at, c.traceparent, c.entity_key, c.source, c.event_uuid,
            c.event_type, c.received_at, p.headers, p.body
     FROM claimed c
     CROSS JOIN LATERAL (
         -- LIMIT keeps this a lookup per claimed task, never a join.
         SELECT p.headers, p.body FROM task_payloads p WHERE p.task_id = c.task_id LIMIT 1
     ) p
     ORDER BY c.priority, c.run_at, c.seq";

/// Leases up to `max` due tasks of `kinds` to `agent`, in one statement.
pub async fn claim(
    pool: &Pool,
    agent: &AgentId,
    kinds: &[TaskKind],
    max: i64,
    now: OffsetDateTime,
    lease: Duration,
    max_bytes: i64,
) -> anyhow::Result<Vec<ClaimedTask>> {
    use base64::Engine as _;
    let kinds: Vec<&str> = kinds.iter().map(TaskKind::as_str).collect();
    let client = pool.get().await?;
    let rows = client
        .query_prepared(
            CLAIM,
            &[
                &now,
                &kinds,
                &max,
                &secs(lease),
                &agent.as_str(),
                &max_bytes,
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let body: Vec<u8> = row.get(14);
            Ok(ClaimedTask {
                task_id: TaskId::parse(row.get::<_, String>(0))?,
                kind: TaskKind::parse(row.get::<_, String>(1))?,
                priority: row.get(2),
                attempt: row.get(3),
                max_attempts: row.get(4),
                lease_token: LeaseToken::parse(row.get::<_, String>(5))?,
                lease_expires_at: row.get(6),
                traceparent: row.get(7),
                entity_key: row.get(8),
                event: ClaimedEvent {
                    source: row.get(9),
                    event_uuid: row.get(10),
                    event_type: row.get(11),
                    received_at: row.get(12),
                    headers: row.get(13),
                    payload: serde_json::from_slice(&body).ok(),
                    payload_base64: base64::engine::general_purpose::STANDARD.encode(&body),
                },
            })
        })
        .collect()
}

/// Due tasks of each of `kinds`, each count at most `max` (what waiting
/// claims could take): one query for all waiting claims, reading no more
/// of the queue than they could take.
pub async fn due_for(
    pool: &Pool,
    now: OffsetDateTime,
    kinds: &[String],
    max: usize,
) -> anyhow::Result<Vec<(String, usize)>> {
    let client = pool.get().await?;
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let rows = client
        .query_prepared(
            "SELECT k.kind, (SELECT count(*) FROM (
                 SELECT 1 FROM tasks t
                 WHERE t.state = 'queued' AND t.kind = k.kind AND t.run_at <= $1 LIMIT $3) d)
             FROM unnest($2::text[]) AS k(kind)",
            &[&now, &kinds, &max],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize))
        .filter(|(_, n)| *n > 0)
        .collect())
}
