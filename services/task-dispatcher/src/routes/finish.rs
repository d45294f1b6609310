//! The end of an attempt, as agents report it: one task per call
//! (`/v1/tasks/{id}/complete`, `/fail`), or many in one call
//! (`/v1/agents/results`, and the `finished` list of a claim). Each item of
//! a batch is answered as its own call would be; one item's refusal never
//! fails the others, and completions arriving together share one
//! transaction (the completer's group commit).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use rave_service::ids::{LeaseToken, TaskId};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tracing::Instrument as _;

use super::{AppState, Reply, agent, counted, exemplar, json_body, task_id, unavailable};
use crate::auth::Agent;
use crate::error::DispatchError;
use crate::metrics::{KindLabel, KindOutcomeLabels};
use crate::settings::RetrySettings;
use crate::store::{self, Completion, Refusal};

/// The longest `error` a failure may carry.
const MAX_ERROR_BYTES: usize = 16 * 1024;

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    lease_token: LeaseToken,
    result: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    lease_token: LeaseToken,
    error: String,
    #[serde(default = "yes")]
    retryable: bool,
}

/// One item of `/v1/agents/results` or of a claim's `finished`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultItem {
    task_id: TaskId,
    lease_token: LeaseToken,
    outcome: ItemOutcome,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default = "yes")]
    retryable: bool,
    /// The agent's span for this task: the item's span continues it, so
    /// the task's trace stays whole when many tasks end in one call.
    #[serde(default)]
    traceparent: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ItemOutcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsRequest {
    /// Items stay raw until each is parsed on its own: a malformed one is
    /// refused alone.
    results: Vec<Box<RawValue>>,
}

pub(super) fn refused(refusal: Refusal, task_id: &TaskId) -> DispatchError {
    match refusal {
        Refusal::NotFound => DispatchError::TaskNotFound(task_id.to_string()),
        Refusal::LeaseLost => DispatchError::LeaseLost,
        Refusal::Unstorable => DispatchError::Unstorable(rave_service::content::Unstorable {
            field: "result".to_owned(),
            reason: "holds a value PostgreSQL cannot store".to_owned(),
        }),
    }
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
    let answer = complete_one(state, &agent, &id, body.lease_token, body.result, bytes).await?;
    Ok(HttpResponse::Ok().json(answer))
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
    let answer = fail_one(
        state,
        &agent,
        &id,
        body.lease_token,
        body.error,
        body.retryable,
    )
    .await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// `POST /v1/agents/results`: many completions and failures in one call.
pub(super) async fn results(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, results_inner(&req, payload, &state).await)
}

async fn results_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    let agent = agent(req, state)?;
    let body: ResultsRequest =
        json_body(req, payload, state.limits.max_results_request_bytes).await?;
    let answers = finish_all(state, &agent, &body.results).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "results": answers })))
}

/// Ends every item's attempt at once and answers each, in order, as its own
/// call would have been answered (`status` and the body, or `error`). Only
/// what fails every item fails the call: too many items, or the database
/// (a repeat of the whole call is safe: each item is idempotent).
pub(super) async fn finish_all(
    state: &AppState,
    agent: &Agent,
    items: &[Box<RawValue>],
) -> Result<Vec<Value>, DispatchError> {
    let max = state.limits.max_results_per_call;
    if items.len() > max {
        return Err(DispatchError::InvalidRequest(format!(
            "results: at most {max} per call"
        )));
    }
    let answers =
        futures_util::future::join_all(items.iter().map(|raw| finish_item(state, agent, raw)))
            .await;
    answers
        .into_iter()
        .map(|(task_id, answer)| {
            let answer = answer.map(|mut body| {
                body["status"] = 200.into();
                body
            });
            let mut body = rave_service::error::item_answer(&state.metrics.rejected, answer)?;
            body["task_id"] = task_id.map_or(Value::Null, Value::String);
            Ok(body)
        })
        .collect()
}

/// One item: parsed on its own, then ended inside its own span.
async fn finish_item(
    state: &AppState,
    agent: &Agent,
    raw: &RawValue,
) -> (Option<String>, Result<Value, DispatchError>) {
    let echo = || {
        serde_json::from_str::<Value>(raw.get())
            .ok()
            .and_then(|v| v.get("task_id")?.as_str().map(str::to_owned))
    };
    let bytes = raw.get().len();
    if bytes > state.limits.max_result_bytes {
        return (
            echo(),
            Err(DispatchError::BodyTooLarge {
                limit: state.limits.max_result_bytes,
            }),
        );
    }
    let item: ResultItem = match serde_json::from_str(raw.get()) {
        Ok(item) => item,
        Err(e) => {
            return (
                echo(),
                Err(DispatchError::InvalidRequest(format!("invalid item: {e}"))),
            );
        }
    };
    let id = item.task_id.clone();
    let name = match item.outcome {
        ItemOutcome::Succeeded => "task.complete",
        ItemOutcome::Failed => "task.fail",
    };
    let span = tracing::info_span!("task.finish", otel.name = name, task_id = %id);
    if let Some(parent) = &item.traceparent {
        rave_service::telemetry::set_remote_parent(&span, parent);
    }
    span.in_scope(|| rave_service::telemetry::record_task_id(&id));
    let answer = async {
        match (item.outcome, item.error) {
            (ItemOutcome::Succeeded, None) => {
                complete_one(state, agent, &id, item.lease_token, item.result, bytes).await
            }
            (ItemOutcome::Succeeded, Some(_)) => Err(DispatchError::InvalidRequest(
                "error: only with \"outcome\": \"failed\"".into(),
            )),
            (ItemOutcome::Failed, Some(error)) => {
                fail_one(state, agent, &id, item.lease_token, error, item.retryable).await
            }
            (ItemOutcome::Failed, None) => Err(DispatchError::InvalidRequest(
                "error: required with \"outcome\": \"failed\"".into(),
            )),
        }
    }
    .instrument(span)
    .await;
    (Some(id.to_string()), answer)
}

/// Completes one task (through the completer's group commit): its answer.
async fn complete_one(
    state: &AppState,
    agent: &Agent,
    id: &TaskId,
    lease_token: LeaseToken,
    result: Option<Value>,
    bytes: usize,
) -> Result<Value, DispatchError> {
    if let Some(result) = &result {
        rave_service::content::check_json("result", result)?;
    }
    let finished = state
        .completer
        .submit(Completion {
            task_id: id.clone(),
            lease_token,
            agent: agent.id.clone(),
            result,
            now: state.clock.now(),
            bytes,
        })
        .await
        .map_err(|e| DispatchError::Unavailable(anyhow::Error::new(e)))?
        .map_err(|r| refused(r, id))?;
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
        tracing::info!(target: rave_service::telemetry::REQUEST_LOG, task_id = %id, agent = %agent.id, "task succeeded");
    }
    Ok(serde_json::json!({ "state": "succeeded" }))
}

/// Records one failed attempt: its answer (where the task went).
async fn fail_one(
    state: &AppState,
    agent: &Agent,
    id: &TaskId,
    lease_token: LeaseToken,
    error: String,
    retryable: bool,
) -> Result<Value, DispatchError> {
    if error.len() > MAX_ERROR_BYTES {
        return Err(DispatchError::InvalidRequest(
            "error: at most 16 KiB".into(),
        ));
    }
    rave_service::content::check_text("error", &error, MAX_ERROR_BYTES)?;
    let retry = state.retry.clone();
    let failure = store::Failure {
        task_id: id.clone(),
        lease_token,
        agent: agent.id.clone(),
        error,
        retryable,
        now: state.clock.now(),
    };
    let outcome = store::fail(&state.pool, &failure, move |attempt| {
        backoff(&retry, attempt)
    })
    .await
    .map_err(unavailable)?
    .map_err(|r| refused(r, id))?;
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
        tracing::info!(target: rave_service::telemetry::REQUEST_LOG, task_id = %id, agent = %agent.id, state = %outcome.state, "task attempt failed");
    }
    serde_json::to_value(&outcome).map_err(|e| DispatchError::Unexpected(e.into()))
}

/// base * 2^(attempt-1), at most max, times 1 ± jitter.
pub fn backoff(retry: &RetrySettings, attempt: i32) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 62);
    let raw = (retry.base_secs * 2f64.powi(exponent)).min(retry.max_secs);
    let unit =
        u64::from_le_bytes(rave_service::crypto::random_bytes::<8>()) as f64 / u64::MAX as f64;
    Duration::from_secs_f64(raw * (1.0 + retry.jitter * (2.0 * unit - 1.0)))
}
