//! PostgreSQL access. Every state change is one conditional statement: it
//! applies only from the expected state with the current lease token, so a
//! repeated or late call changes nothing.

use std::time::Duration;

use anyhow::Context as _;
use rave_pg::{GenericClient, Pool};
use rave_service::ids::{
    AgentId, EventType, EventUuid, LeaseToken, SourceName, TaskId, TaskKind, TraceId,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::routing::Routed;

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

/// An event handed over by dedup-store's relay.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub task_id: TaskId,
    pub source: SourceName,
    pub event_uuid: EventUuid,
    pub event_type: EventType,
    pub received_at: OffsetDateTime,
    pub trace_id: Option<TraceId>,
    /// The span the task hangs off in the webhook's trace (see `routes`).
    pub traceparent: Option<String>,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: Vec<u8>,
}

impl IncomingEvent {
    /// The `traceparent` stored with the task: its creation span's, or for an
    /// event stored without one, a new span in the event's trace.
    pub fn task_traceparent(&self) -> Option<String> {
        self.traceparent.clone().or_else(|| {
            let span = hex::encode(rave_service::crypto::random_bytes::<8>());
            self.trace_id.as_ref().map(|t| format!("00-{t}-{span}-01"))
        })
    }
}

/// What a hand-off did.
#[derive(Debug, Default, Serialize)]
pub struct Accepted {
    /// Tasks created now, with their kinds.
    #[serde(skip)]
    pub created: Vec<TaskKind>,
    pub created_count: usize,
    pub ignored: usize,
    /// Events whose task (or ignore record) existed already: a redelivery.
    pub duplicates: usize,
    /// Older tasks cancelled or asked to stop by `supersede`.
    pub superseded: u64,
}

/// Creates a task per routed event and an ignore record per unrouted one,
/// idempotently on `task_id`, in one transaction; wakes waiting claims.
pub async fn accept_events(
    pool: &Pool,
    now: OffsetDateTime,
    routed: Vec<(IncomingEvent, Routed)>,
    ignored: Vec<IncomingEvent>,
) -> anyhow::Result<Accepted> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut accepted = Accepted::default();

    if !routed.is_empty() {
        let col = |f: &dyn Fn(&(IncomingEvent, Routed)) -> String| {
            routed.iter().map(f).collect::<Vec<_>>()
        };
        let ids = col(&|(e, _)| e.task_id.to_string());
        let sources = col(&|(e, _)| e.source.to_string());
        let uuids = col(&|(e, _)| e.event_uuid.to_string());
        let types = col(&|(e, _)| e.event_type.to_string());
        let kinds = col(&|(_, r)| r.kind.to_string());
        let policies = col(&|(_, r)| r.policy.as_str().to_owned());
        let priorities: Vec<i16> = routed.iter().map(|(_, r)| r.priority).collect();
        let max_attempts: Vec<i32> = routed.iter().map(|(_, r)| r.max_attempts).collect();
        let entities: Vec<Option<String>> =
            routed.iter().map(|(_, r)| r.entity_key.clone()).collect();
        let traceparents: Vec<Option<String>> =
            routed.iter().map(|(e, _)| e.task_traceparent()).collect();
        let received: Vec<OffsetDateTime> = routed.iter().map(|(e, _)| e.received_at).collect();
        let rows = tx
            .query(
                "INSERT INTO tasks (task_id, source, event_uuid, event_type, kind, priority, state,
                                    max_attempts, run_at, entity_key, policy, traceparent,
                                    received_at, created_at, updated_at)
                 SELECT i.task_id, i.source, i.event_uuid, i.event_type, i.kind, i.priority, 'queued',
                        i.max_attempts, $12, i.entity_key, i.policy, i.traceparent, i.received_at, $12, $12
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[],
                             $7::int4[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])
                      WITH ORDINALITY AS i(task_id, source, event_uuid, event_type, kind, priority,
                                           max_attempts, entity_key, policy, traceparent, received_at, n)
                 ORDER BY i.n
                 ON CONFLICT (task_id) DO NOTHING
                 RETURNING task_id, kind",
                &[
                    &ids, &sources, &uuids, &types, &kinds, &priorities, &max_attempts, &entities, &policies,
                    &traceparents, &received, &now,
                ],
            )
            .await?;
        let created_ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        for row in &rows {
            accepted
                .created
                .push(TaskKind::parse(row.get::<_, String>(1))?);
        }
        accepted.duplicates += routed.len() - rows.len();

        let headers: Vec<serde_json::Value> = routed
            .iter()
            .map(|(e, _)| serde_json::Value::Object(e.headers.clone()))
            .collect();
        let bodies: Vec<&[u8]> = routed.iter().map(|(e, _)| e.body.as_slice()).collect();
        tx.execute(
            "INSERT INTO task_payloads (task_id, headers, body)
             SELECT i.task_id, i.headers, i.body
             FROM unnest($1::text[], $2::jsonb[], $3::bytea[]) AS i(task_id, headers, body)
             WHERE i.task_id = ANY($4)",
            &[&ids, &headers, &bodies, &created_ids],
        )
        .await?;

        // supersede: the newest new task of a (kind, entity) cancels older
        // queued ones and asks leased ones to stop.
        let newest = "SELECT kind, entity_key, max(seq) AS seq
                      FROM tasks WHERE task_id = ANY($1) AND policy = 'supersede' GROUP BY kind, entity_key";
        accepted.superseded += tx
            .execute(
                &format!(
                    "UPDATE tasks o SET state = 'cancelled', cancel_reason = 'superseded',
                            error = 'superseded by a newer task', finished_at = $2, updated_at = $2
                     FROM ({newest}) n
                     WHERE o.kind = n.kind AND o.entity_key = n.entity_key AND o.seq < n.seq AND o.state = 'queued'"
                ),
                &[&created_ids, &now],
            )
            .await?;
        accepted.superseded += tx
            .execute(
                &format!(
                    "UPDATE tasks o SET cancel_requested = true, cancel_reason = 'superseded', updated_at = $2
                     FROM ({newest}) n
                     WHERE o.kind = n.kind AND o.entity_key = n.entity_key AND o.seq < n.seq
                       AND o.state = 'leased' AND NOT o.cancel_requested"
                ),
                &[&created_ids, &now],
            )
            .await?;
        if !created_ids.is_empty() {
            tx.execute("SELECT pg_notify($1, '')", &[&WAKE_CHANNEL])
                .await?;
        }
    }

    if !ignored.is_empty() {
        let col = |f: &dyn Fn(&IncomingEvent) -> String| ignored.iter().map(f).collect::<Vec<_>>();
        let received: Vec<OffsetDateTime> = ignored.iter().map(|e| e.received_at).collect();
        let inserted = tx
            .execute(
                "INSERT INTO ignored_events (task_id, source, event_uuid, event_type, received_at, ignored_at)
                 SELECT *, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 ON CONFLICT (task_id) DO NOTHING",
                &[
                    &col(&|e| e.task_id.to_string()),
                    &col(&|e| e.source.to_string()),
                    &col(&|e| e.event_uuid.to_string()),
                    &col(&|e| e.event_type.to_string()),
                    &received,
                    &now,
                ],
            )
            .await?;
        accepted.ignored = inserted as usize;
        accepted.duplicates += ignored.len() - inserted as usize;
    }
    tx.commit().await?;
    accepted.created_count = accepted.created.len();
    Ok(accepted)
}

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

/// Leases up to `max` due tasks of `kinds` to `agent`, in one statement.
pub async fn claim(
    pool: &Pool,
    agent: &AgentId,
    kinds: &[TaskKind],
    max: i64,
    now: OffsetDateTime,
    lease: Duration,
) -> anyhow::Result<Vec<ClaimedTask>> {
    use base64::Engine as _;
    let kinds: Vec<&str> = kinds.iter().map(TaskKind::as_str).collect();
    let client = pool.get().await?;
    let rows = client
        .query(
            // One ordered index scan per kind (tasks_claimable_idx is
            // (kind, priority, run_at, seq)), each stopping after $3 rows,
            // then the best $3 of those: a claim costs O($3), not O(queue).
            // `kind = ANY($2)` in one scan made PostgreSQL read and sort every
            // queued task on each claim (found by `ravectl bench dispatch`).
            "WITH per_kind AS (
                 SELECT t.task_id, t.priority, t.run_at, t.seq
                 FROM unnest($2::text[]) AS k(kind)
                 CROSS JOIN LATERAL (
                     SELECT t.task_id, t.priority, t.run_at, t.seq FROM tasks t
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
             ), candidates AS (
                 SELECT task_id FROM per_kind ORDER BY priority, run_at, seq LIMIT $3
             ), claimed AS (
                 UPDATE tasks t
                 SET state = 'leased', attempt = t.attempt + 1,
                     lease_token = replace(gen_random_uuid()::text, '-', ''),
                     lease_expires_at = $1 + make_interval(secs => $4), agent_id = $5,
                     claimed_at = $1, updated_at = $1
                 FROM candidates c WHERE t.task_id = c.task_id
                 RETURNING t.*
             ), attempts AS (
                 INSERT INTO task_attempts (task_id, run, attempt, agent_id, lease_token, claimed_at)
                 SELECT task_id, run, attempt, agent_id, lease_token, claimed_at FROM claimed
             )
             SELECT c.task_id, c.kind, c.priority, c.attempt, c.max_attempts, c.lease_token,
                    c.lease_expires_at, c.traceparent, c.entity_key, c.source, c.event_uuid,
                    c.event_type, c.received_at, p.headers, p.body
             FROM claimed c JOIN task_payloads p USING (task_id)
             ORDER BY c.priority, c.run_at, c.seq",
            &[&now, &kinds, &max, &secs(lease), &agent.as_str()],
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

/// Whether any task is due now (one cheap query for all waiting claims).
pub async fn any_due(pool: &Pool, now: OffsetDateTime) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'queued' AND run_at <= $1)",
            &[&now],
        )
        .await?;
    Ok(row.get(0))
}

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
}

async fn refusal(client: &impl GenericClient, task_id: &TaskId) -> anyhow::Result<Refusal> {
    let exists = client
        .query_opt(
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
        .query_opt(
            "UPDATE tasks SET lease_expires_at = $4 + make_interval(secs => $5), updated_at = $4
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

/// A completion, as batched.
#[derive(Debug, Clone)]
pub struct Completion {
    pub task_id: TaskId,
    pub lease_token: LeaseToken,
    pub agent: AgentId,
    pub result: Option<serde_json::Value>,
    pub now: OffsetDateTime,
}

/// A finished task, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub kind: TaskKind,
    /// Claim to finish, when this call finished it (not a repeat).
    pub duration_secs: Option<f64>,
    pub traceparent: Option<String>,
}

/// Completes a batch of tasks in one transaction.
pub async fn complete_batch(
    pool: &Pool,
    items: &[Completion],
) -> anyhow::Result<Vec<Result<Finished, Refusal>>> {
    let now = items.iter().map(|c| c.now).max().context("empty batch")?;
    let ids: Vec<&str> = items.iter().map(|c| c.task_id.as_str()).collect();
    let tokens: Vec<&str> = items.iter().map(|c| c.lease_token.as_str()).collect();
    let agents: Vec<&str> = items.iter().map(|c| c.agent.as_str()).collect();
    let results: Vec<Option<serde_json::Value>> = items.iter().map(|c| c.result.clone()).collect();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let done = tx
        .query(
            "WITH input AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
                     AS i(task_id, lease_token, agent_id, result)
             ), done AS (
                 UPDATE tasks t SET state = 'succeeded', result = i.result, error = NULL,
                        finished_at = $5, updated_at = $5, lease_expires_at = NULL
                 FROM input i
                 WHERE t.task_id = i.task_id AND t.state = 'leased' AND t.lease_token = i.lease_token
                   AND t.agent_id = i.agent_id AND t.lease_expires_at >= $5
                 RETURNING t.task_id, t.kind, t.claimed_at, t.traceparent, t.lease_token
             ), attempts AS (
                 UPDATE task_attempts a SET ended_at = $5, outcome = 'succeeded'
                 FROM done d WHERE a.lease_token = d.lease_token
             )
             SELECT task_id, kind, extract(epoch FROM ($5::timestamptz - claimed_at))::float8, traceparent FROM done",
            &[&ids, &tokens, &agents, &results, &now],
        )
        .await?;
    let mut finished: std::collections::HashMap<String, Finished> =
        std::collections::HashMap::new();
    for row in &done {
        finished.insert(
            row.get(0),
            Finished {
                kind: TaskKind::parse(row.get::<_, String>(1))?,
                duration_secs: Some(row.get(2)),
                traceparent: row.get(3),
            },
        );
    }
    // Whatever did not complete now: a repeat of a completion with the same
    // token is answered as success; anything else was refused.
    let current = tx
        .query(
            "SELECT task_id, state, lease_token, agent_id, kind FROM tasks WHERE task_id = ANY($1)",
            &[&ids],
        )
        .await?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(f) = finished.remove(item.task_id.as_str()) {
            out.push(Ok(f));
            continue;
        }
        let row = current
            .iter()
            .find(|r| r.get::<_, &str>(0) == item.task_id.as_str());
        out.push(match row {
            None => Err(Refusal::NotFound),
            Some(r)
                if r.get::<_, &str>(1) == "succeeded"
                    && r.get::<_, Option<&str>>(2) == Some(item.lease_token.as_str())
                    && r.get::<_, Option<&str>>(3) == Some(item.agent.as_str()) =>
            {
                Ok(Finished {
                    kind: TaskKind::parse(r.get::<_, String>(4))?,
                    duration_secs: None,
                    traceparent: None,
                })
            }
            Some(_) => Err(Refusal::LeaseLost),
        });
    }
    Ok(out)
}

/// Where a failed attempt left its task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailOutcome {
    /// queued (retrying), dead, failed or cancelled.
    pub state: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub retry_at: Option<OffsetDateTime>,
    #[serde(skip)]
    pub kind: Option<TaskKind>,
    /// Claim to failure, when this call failed it (not a repeat).
    #[serde(skip)]
    pub duration_secs: Option<f64>,
}

/// A failed attempt, as an agent reports it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub task_id: TaskId,
    pub lease_token: LeaseToken,
    pub agent: AgentId,
    pub error: String,
    pub retryable: bool,
    pub now: OffsetDateTime,
}

/// Records a failed attempt: retried after `backoff(attempt)` while attempts
/// remain and the failure is retryable, dead when they are used up, failed
/// when not retryable, cancelled when a cancel was requested.
pub async fn fail(
    pool: &Pool,
    failure: &Failure,
    backoff: impl Fn(i32) -> Duration,
) -> anyhow::Result<Result<FailOutcome, Refusal>> {
    let Failure {
        task_id,
        lease_token: token,
        agent,
        error,
        retryable,
        now,
    } = failure;
    let (error, retryable, now) = (error.as_str(), *retryable, *now);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT attempt, max_attempts, cancel_requested, kind, extract(epoch FROM ($4::timestamptz - claimed_at))::float8
             FROM tasks
             WHERE task_id = $1 AND state = 'leased' AND lease_token = $2 AND agent_id = $3
               AND lease_expires_at >= $4
             FOR UPDATE",
            &[&task_id.as_str(), &token.as_str(), &agent.as_str(), &now],
        )
        .await?;
    let Some(row) = row else {
        // A repeat of this very failure is answered with where it left the task.
        let repeat = tx
            .query_opt(
                "SELECT t.state, t.run_at FROM task_attempts a JOIN tasks t USING (task_id)
                 WHERE a.lease_token = $1 AND a.task_id = $2 AND a.agent_id = $3 AND a.outcome = 'failed'",
                &[&token.as_str(), &task_id.as_str(), &agent.as_str()],
            )
            .await?;
        let answer = match repeat {
            Some(r) => {
                let state: String = r.get(0);
                let retry_at = (state == "queued").then(|| r.get(1));
                Ok(FailOutcome {
                    state,
                    retry_at,
                    kind: None,
                    duration_secs: None,
                })
            }
            None => Err(refusal(&tx, task_id).await?),
        };
        tx.commit().await?;
        return Ok(answer);
    };
    let (attempt, max_attempts, cancel_requested): (i32, i32, bool) =
        (row.get(0), row.get(1), row.get(2));
    let (state, retry_at) = if cancel_requested {
        ("cancelled", None)
    } else if !retryable {
        ("failed", None)
    } else if attempt >= max_attempts {
        ("dead", None)
    } else {
        ("queued", Some(now + backoff(attempt)))
    };
    tx.execute(
        "UPDATE tasks SET state = $2::text, error = $3, updated_at = $4::timestamptz, lease_expires_at = NULL,
                run_at = coalesce($5::timestamptz, run_at),
                lease_token = CASE WHEN $2::text = 'queued' THEN NULL ELSE lease_token END,
                agent_id = CASE WHEN $2::text = 'queued' THEN NULL ELSE agent_id END,
                finished_at = CASE WHEN $2::text = 'queued' THEN NULL ELSE $4::timestamptz END
         WHERE task_id = $1",
        &[&task_id.as_str(), &state, &error, &now, &retry_at],
    )
    .await?;
    tx.execute(
        "UPDATE task_attempts SET ended_at = $2, outcome = 'failed', error = $3 WHERE lease_token = $1",
        &[&token.as_str(), &now, &error],
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(FailOutcome {
        state: state.to_owned(),
        retry_at,
        kind: Some(TaskKind::parse(row.get::<_, String>(3))?),
        duration_secs: Some(row.get(4)),
    }))
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
/// or cancelled), at most `batch` of them.
pub async fn expire_leases(
    pool: &Pool,
    now: OffsetDateTime,
    batch: i64,
) -> anyhow::Result<Vec<LostLease>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "WITH expired AS (
                 SELECT task_id FROM tasks WHERE state = 'leased' AND lease_expires_at < $1
                 ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
             ), lost AS (
                 UPDATE tasks t
                 SET state = CASE WHEN t.cancel_requested THEN 'cancelled'
                                  WHEN t.attempt >= t.max_attempts THEN 'dead'
                                  ELSE 'queued' END,
                     finished_at = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN $1 END,
                     run_at = $1, lease_token = NULL, lease_expires_at = NULL, agent_id = NULL,
                     error = 'lease lost', updated_at = $1
                 FROM expired e WHERE t.task_id = e.task_id
                 RETURNING t.task_id, t.kind, t.state
             ), attempts AS (
                 UPDATE task_attempts a SET ended_at = $1, outcome = 'lease_lost', error = 'lease expired'
                 FROM lost l WHERE a.task_id = l.task_id AND a.ended_at IS NULL
             )
             SELECT task_id, kind, state FROM lost",
            &[&now, &batch],
        )
        .await?;
    if rows.iter().any(|r| r.get::<_, &str>(2) == "queued") {
        tx.execute("SELECT pg_notify($1, '')", &[&WAKE_CHANNEL])
            .await?;
    }
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

/// Deletes up to `batch` tasks (and ignore records) finished before `before`.
pub async fn prune(pool: &Pool, before: OffsetDateTime, batch: i64) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let tasks = client
        .execute(
            "DELETE FROM tasks WHERE task_id IN (
                 SELECT task_id FROM tasks WHERE finished_at < $1
                 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
    let ignored = client
        .execute(
            "DELETE FROM ignored_events WHERE task_id IN (
                 SELECT task_id FROM ignored_events WHERE ignored_at < $1
                 ORDER BY ignored_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
    Ok(tasks + ignored)
}

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

/// Task counts by (kind, state) and the wait of the oldest due task, for
/// the gauges.
pub async fn gauges(
    pool: &Pool,
    now: OffsetDateTime,
) -> anyhow::Result<(Vec<(String, String, i64)>, f64)> {
    let client = pool.get().await?;
    let counts = client
        .query(
            "SELECT kind, state, count(*) FROM tasks GROUP BY kind, state",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let oldest: Option<f64> = client
        .query_one(
            "SELECT extract(epoch FROM ($1::timestamptz - min(run_at)))::float8 FROM tasks WHERE state = 'queued' AND run_at <= $1",
            &[&now],
        )
        .await?
        .get(0);
    Ok((counts, oldest.unwrap_or(0.0).max(0.0)))
}
