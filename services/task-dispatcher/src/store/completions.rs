//! Completions and failures: the end of an attempt, batched (completions)
//! or one at a time (failures: retry after backoff, dead, failed, cancelled).

use std::time::Duration;

use anyhow::Context as _;
use rave_pg::{GenericClient, Pool, Prepared};
use rave_service::ids::{AgentId, LeaseToken, TaskId, TaskKind};
use serde::Serialize;
use time::OffsetDateTime;

use super::leases::{Refusal, refusal};

/// A completion, as batched.
#[derive(Debug, Clone)]
pub struct Completion {
    pub task_id: TaskId,
    pub lease_token: LeaseToken,
    pub agent: AgentId,
    pub result: Option<serde_json::Value>,
    pub now: OffsetDateTime,
    /// The request's size: what the result holds in memory, about.
    pub bytes: usize,
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
    items: &[&Completion],
) -> anyhow::Result<Vec<Result<Finished, Refusal>>> {
    let now = items.iter().map(|c| c.now).max().context("empty batch")?;
    let ids: Vec<&str> = items.iter().map(|c| c.task_id.as_str()).collect();
    let tokens: Vec<&str> = items.iter().map(|c| c.lease_token.as_str()).collect();
    let agents: Vec<&str> = items.iter().map(|c| c.agent.as_str()).collect();
    let results: Vec<Option<serde_json::Value>> = items.iter().map(|c| c.result.clone()).collect();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let done = tx
        .query_prepared(
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
        .query_prepared(
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
            // Attempts that started: unacknowledged leases do not count.
            "SELECT attempt - unacknowledged_leases, max_attempts, cancel_requested, kind, extract(epoch FROM ($4::timestamptz - claimed_at))::float8
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
            .query_opt_prepared(
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
        // At PostgreSQL's precision (µs), so this answer and a repeat's
        // (read back from the row) name the same instant.
        let at = now + backoff(attempt);
        let at = at
            .replace_nanosecond(at.nanosecond() / 1000 * 1000)
            .unwrap_or(at);
        ("queued", Some(at))
    };
    tx.execute_prepared(
        "UPDATE tasks SET state = $2::text, error = $3, updated_at = $4::timestamptz, lease_expires_at = NULL,
                run_at = coalesce($5::timestamptz, run_at),
                lease_token = CASE WHEN $2::text = 'queued' THEN NULL ELSE lease_token END,
                agent_id = CASE WHEN $2::text = 'queued' THEN NULL ELSE agent_id END,
                finished_at = CASE WHEN $2::text = 'queued' THEN NULL ELSE $4::timestamptz END
         WHERE task_id = $1",
        &[&task_id.as_str(), &state, &error, &now, &retry_at],
    )
    .await?;
    tx.execute_prepared(
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

/// [`complete_batch`], with one unstorable completion never failing the
/// others: a batch PostgreSQL refuses for its content is split until the
/// completions at fault are found (rave_service::isolate); those are
/// refused as [`Refusal::Unstorable`], the rest commit.
pub async fn complete_isolated(
    pool: &Pool,
    items: &[Completion],
) -> anyhow::Result<Vec<Result<Finished, Refusal>>> {
    type Numbered = Vec<(usize, Result<Finished, Refusal>)>;
    let run = rave_service::isolate::runner(|part: &[(usize, &Completion)]| {
        // A pool is a handle: each run holds its own.
        let pool = pool.clone();
        Box::pin(async move {
            let completions: Vec<&Completion> = part.iter().map(|(_, c)| *c).collect();
            let results = complete_batch(&pool, &completions).await?;
            Ok::<Numbered, _>(part.iter().map(|(n, _)| *n).zip(results).collect())
        })
    });
    fn concat(mut a: Numbered, b: Numbered) -> Numbered {
        a.extend(b);
        a
    }
    let numbered: Vec<(usize, &Completion)> = items.iter().enumerate().collect();
    let out =
        rave_service::isolate::isolate(&numbered, &run, concat, rave_pg::is_content_error).await?;
    let mut results: Vec<Result<Finished, Refusal>> = vec![Err(Refusal::Unstorable); items.len()];
    for (n, result) in out.done.unwrap_or_default() {
        results[n] = result;
    }
    for (n, error) in out.set_aside {
        tracing::warn!(task_id = %items[n].task_id, error = %format!("{error:#}"), "completion refused: PostgreSQL cannot store it");
    }
    Ok(results)
}
