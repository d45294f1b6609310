//! The agents' API: claim (long-polled), heartbeat, complete (batched),
//! fail.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use rave_service::ids::{LeaseToken, TaskId, TaskKind};
use serde::Deserialize;

use super::{AppState, Reply, agent, counted, exemplar, json_body, task_id, unavailable};
use crate::error::DispatchError;
use crate::metrics::{KindLabel, KindOutcomeLabels};
use crate::settings::RetrySettings;
use crate::store::{self, Completion, Refusal};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimRequest {
    max_tasks: Option<i64>,
    wait_secs: Option<u64>,
    /// A subset of the agent's kinds; default: all of them.
    kinds: Option<Vec<TaskKind>>,
}

pub(super) async fn claim(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, claim_inner(&req, payload, &state).await)
}

async fn claim_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    let agent = agent(req, state)?;
    let request: ClaimRequest = json_body(req, payload, 64 * 1024).await?;
    let kinds = match request.kinds {
        Some(kinds) => {
            if let Some(k) = kinds.iter().find(|k| !agent.kinds.contains(k)) {
                return Err(DispatchError::Forbidden(format!(
                    "agent {} does not handle kind {k}",
                    agent.id
                )));
            }
            kinds
        }
        None => agent.kinds.clone(),
    };
    let max = request.max_tasks.unwrap_or(1);
    if !(1..=state.claim.max_tasks).contains(&max) {
        return Err(DispatchError::InvalidRequest(format!(
            "max_tasks: must be between 1 and {}",
            state.claim.max_tasks
        )));
    }
    let wait = request.wait_secs.unwrap_or(state.claim.long_poll_secs);
    if wait > state.claim.long_poll_max_secs {
        return Err(DispatchError::InvalidRequest(format!(
            "wait_secs: at most {}",
            state.claim.long_poll_max_secs
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let mut wake = state.waker.subscribe();
        let tasks = store::claim(
            &state.pool,
            &agent.id,
            &kinds,
            max,
            state.clock.now(),
            state.claim.lease(),
            state.claim.max_response_bytes,
        )
        .await
        .map_err(unavailable)?;
        if !tasks.is_empty() {
            let mut tasks = tasks;
            for task in &mut tasks {
                state
                    .metrics
                    .claims
                    .get_or_create(&KindLabel {
                        kind: task.kind.to_string(),
                    })
                    .inc();
                tracing::info!(task_id = %task.task_id, agent = %agent.id, attempt = task.attempt, "task claimed");
                // The claim joins the task's trace; the agent continues from it.
                if let Some(parent) = task.traceparent.clone() {
                    let span = tracing::info_span!(
                        "task.claim",
                        otel.name = "task.claim",
                        task_id = %task.task_id,
                        agent = %agent.id,
                        attempt = task.attempt
                    );
                    rave_service::telemetry::set_remote_parent(&span, &parent);
                    span.in_scope(|| rave_service::telemetry::record_task_id(&task.task_id));
                    task.traceparent =
                        rave_service::telemetry::traceparent_of(&span).or(Some(parent));
                }
            }
            return Ok(HttpResponse::Ok().json(serde_json::json!({ "tasks": tasks })));
        }
        if state.waker.is_closed() {
            return Ok(HttpResponse::NoContent().finish());
        }
        // Counted while parked; /metrics reads the count at scrape time.
        let waiting = state.waker.waiting_guard();
        let woken = tokio::select! {
            changed = wake.changed() => changed.is_ok(),
            _ = tokio::time::sleep_until(deadline) => false,
        };
        drop(waiting);
        if !woken || state.waker.is_closed() {
            return Ok(HttpResponse::NoContent().finish());
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    lease_token: LeaseToken,
}

fn refused(refusal: Refusal, task_id: &TaskId) -> DispatchError {
    match refusal {
        Refusal::NotFound => DispatchError::TaskNotFound(task_id.to_string()),
        Refusal::LeaseLost => DispatchError::LeaseLost,
        Refusal::Unstorable => DispatchError::Unstorable(rave_service::content::Unstorable {
            field: "result".to_owned(),
            reason: "holds a value PostgreSQL cannot store".to_owned(),
        }),
    }
}

pub(super) async fn heartbeat(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, heartbeat_inner(&req, payload, &state).await)
}

async fn heartbeat_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    let agent = agent(req, state)?;
    let id = task_id(req)?;
    rave_service::telemetry::record_task_id(&id);
    let body: LeaseRequest = json_body(req, payload, 64 * 1024).await?;
    let beat = store::heartbeat(
        &state.pool,
        &id,
        &body.lease_token,
        &agent.id,
        state.clock.now(),
        state.claim.lease(),
    )
    .await
    .map_err(unavailable)?
    .map_err(|r| refused(r, &id))?;
    Ok(HttpResponse::Ok().json(beat))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    lease_token: LeaseToken,
    result: Option<serde_json::Value>,
}

pub(super) async fn complete(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, complete_inner(&req, payload, &state).await)
}

async fn complete_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    let agent = agent(req, state)?;
    let id = task_id(req)?;
    rave_service::telemetry::record_task_id(&id);
    let bytes = rave_service::http::expected_body_bytes(req, state.limits.max_result_bytes);
    let body: CompleteRequest = json_body(req, payload, state.limits.max_result_bytes).await?;
    if let Some(result) = &body.result {
        rave_service::content::check_json("result", result)?;
    }
    let finished = state
        .completer
        .submit(Completion {
            task_id: id.clone(),
            lease_token: body.lease_token,
            agent: agent.id.clone(),
            result: body.result,
            now: state.clock.now(),
            bytes,
        })
        .await
        .map_err(|e| DispatchError::Unavailable(anyhow::Error::new(e)))?
        .map_err(|r| refused(r, &id))?;
    if let Some(secs) = finished.duration_secs {
        let kind = finished.kind.to_string();
        state
            .metrics
            .completions
            .get_or_create(&KindOutcomeLabels {
                kind: kind.clone(),
                outcome: "succeeded",
            })
            .inc();
        state
            .metrics
            .task_duration
            .get_or_create(&KindLabel { kind })
            .observe(secs, exemplar(finished.traceparent.as_deref()), None);
        tracing::info!(task_id = %id, agent = %agent.id, "task succeeded");
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "state": "succeeded" })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    lease_token: LeaseToken,
    error: String,
    #[serde(default = "yes")]
    retryable: bool,
}

fn yes() -> bool {
    true
}

/// base * 2^(attempt-1), at most max, times 1 ± jitter.
pub fn backoff(retry: &RetrySettings, attempt: i32) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 62);
    let raw = (retry.base_secs * 2f64.powi(exponent)).min(retry.max_secs);
    let unit =
        u64::from_le_bytes(rave_service::crypto::random_bytes::<8>()) as f64 / u64::MAX as f64;
    Duration::from_secs_f64(raw * (1.0 + retry.jitter * (2.0 * unit - 1.0)))
}

pub(super) async fn fail(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, fail_inner(&req, payload, &state).await)
}

async fn fail_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    let agent = agent(req, state)?;
    let id = task_id(req)?;
    rave_service::telemetry::record_task_id(&id);
    let body: FailRequest = json_body(req, payload, state.limits.max_result_bytes).await?;
    if body.error.len() > 16 * 1024 {
        return Err(DispatchError::InvalidRequest(
            "error: at most 16 KiB".into(),
        ));
    }
    rave_service::content::check_text("error", &body.error, 16 * 1024)?;
    let retry = state.retry.clone();
    let failure = store::Failure {
        task_id: id.clone(),
        lease_token: body.lease_token,
        agent: agent.id.clone(),
        error: body.error,
        retryable: body.retryable,
        now: state.clock.now(),
    };
    let outcome = store::fail(&state.pool, &failure, move |attempt| {
        backoff(&retry, attempt)
    })
    .await
    .map_err(unavailable)?
    .map_err(|r| refused(r, &id))?;
    if let (Some(kind), Some(secs)) = (&outcome.kind, outcome.duration_secs) {
        let outcome_label = match outcome.state.as_str() {
            "queued" => "retried",
            "dead" => "dead",
            "cancelled" => "cancelled",
            _ => "failed",
        };
        let kind = kind.to_string();
        state
            .metrics
            .completions
            .get_or_create(&KindOutcomeLabels {
                kind: kind.clone(),
                outcome: outcome_label,
            })
            .inc();
        if outcome.state == "dead" {
            state
                .metrics
                .dead_letters
                .get_or_create(&KindLabel { kind: kind.clone() })
                .inc();
        }
        state
            .metrics
            .task_duration
            .get_or_create(&KindLabel { kind })
            .observe(secs, None, None);
        tracing::info!(task_id = %id, agent = %agent.id, state = %outcome.state, "task attempt failed");
    }
    Ok(HttpResponse::Ok().json(outcome))
}
