//! HTTP routes: the agents' API, the operators' API, and the internal
//! hand-off from dedup-store's relay. Each group has its own bearer tokens.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use rave_pg::Pool;
use rave_service::batch::Batcher;
use rave_service::ids::{EventType, EventUuid, LeaseToken, SourceName, TaskId, TaskKind, TraceId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::auth::{Agent, Agents, TokenSet, bearer};
use crate::clock::Clock;
use crate::error::DispatchError;
use crate::metrics::{KindLabel, KindOutcomeLabels, Metrics, ReasonLabel, SourceLabel};
use crate::routing::Router;
use crate::settings::{ClaimSettings, Limits, RetrySettings};
use crate::store::{self, Completion, Finished, IncomingEvent, Refusal};
use crate::waker::Waker;

pub type Completer = Batcher<Completion, Result<Finished, Refusal>>;

#[derive(Debug)]
pub struct AppState {
    pub pool: Pool,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub waker: Arc<Waker>,
    pub completer: Completer,
    pub router: Router,
    pub agents: Agents,
    pub operators: TokenSet,
    pub relays: TokenSet,
    pub claim: ClaimSettings,
    pub retry: RetrySettings,
    pub limits: Limits,
    pub kinds: Vec<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/agents/claim", web::post().to(claim))
        .route("/v1/tasks/{task_id}/heartbeat", web::post().to(heartbeat))
        .route("/v1/tasks/{task_id}/complete", web::post().to(complete))
        .route("/v1/tasks/{task_id}/fail", web::post().to(fail))
        .route("/v1/tasks", web::get().to(list_tasks))
        .route("/v1/tasks/{task_id}", web::get().to(get_task))
        .route("/v1/tasks/{task_id}/cancel", web::post().to(cancel))
        .route("/v1/tasks/{task_id}/retry", web::post().to(retry))
        .route("/v1/ignored-events", web::get().to(list_ignored))
        .route("/v1/internal/events", web::post().to(accept_events))
        .route("/healthz", web::get().to(rave_service::http::healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

type Reply = Result<HttpResponse, DispatchError>;

/// Counts every refusal by its code, then passes the result on.
fn counted(state: &AppState, result: Reply) -> Reply {
    if let Err(e) = &result {
        state
            .metrics
            .rejected
            .get_or_create(&ReasonLabel { reason: e.code() })
            .inc();
    }
    result
}

fn unavailable(e: anyhow::Error) -> DispatchError {
    DispatchError::Unavailable(e)
}

async fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<T, DispatchError> {
    let raw = rave_service::http::read_body(req, payload, limit).await?;
    let raw: &[u8] = if raw.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &raw
    };
    serde_json::from_slice(raw)
        .map_err(|e| DispatchError::InvalidRequest(format!("invalid JSON body: {e}")))
}

fn task_id(req: &HttpRequest) -> Result<TaskId, DispatchError> {
    let raw = req.match_info().get("task_id").unwrap_or_default();
    TaskId::parse(raw).map_err(|e| DispatchError::InvalidRequest(e.to_string()))
}

fn agent<'a>(req: &HttpRequest, state: &'a AppState) -> Result<&'a Agent, DispatchError> {
    bearer(req)
        .and_then(|token| state.agents.authenticate(token))
        .ok_or(DispatchError::Unauthorized)
}

fn operator(req: &HttpRequest, state: &AppState) -> Result<(), DispatchError> {
    match bearer(req) {
        Some(token) if state.operators.allows(token) => Ok(()),
        _ => Err(DispatchError::Unauthorized),
    }
}

fn exemplar(traceparent: Option<&str>) -> Option<rave_service::metrics::TraceExemplar> {
    let trace_id = traceparent?.split('-').nth(1)?;
    TraceId::parse(trace_id)
        .ok()
        .map(|t| rave_service::metrics::TraceExemplar {
            trace_id: t.to_string(),
        })
}

// --- agents ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimRequest {
    max_tasks: Option<i64>,
    wait_secs: Option<u64>,
    /// A subset of the agent's kinds; default: all of them.
    kinds: Option<Vec<TaskKind>>,
}

async fn claim(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> Reply {
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
        // Counted while parked; /metrics reads the count at scrape time.
        let waiting = state.waker.waiting_guard();
        let woken = tokio::select! {
            changed = wake.changed() => changed.is_ok(),
            _ = tokio::time::sleep_until(deadline) => false,
        };
        drop(waiting);
        if !woken {
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
    }
}

async fn heartbeat(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> Reply {
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

async fn complete(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> Reply {
    counted(&state, complete_inner(&req, payload, &state).await)
}

async fn complete_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    let agent = agent(req, state)?;
    let id = task_id(req)?;
    rave_service::telemetry::record_task_id(&id);
    let body: CompleteRequest = json_body(req, payload, state.limits.max_result_bytes).await?;
    let finished = state
        .completer
        .submit(Completion {
            task_id: id.clone(),
            lease_token: body.lease_token,
            agent: agent.id.clone(),
            result: body.result,
            now: state.clock.now(),
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

async fn fail(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> Reply {
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

// --- operators -----------------------------------------------------------------

async fn list_tasks(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, list_tasks_inner(&req, &state).await)
}

async fn list_tasks_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let filter = web::Query::<store::TaskFilter>::from_query(req.query_string())
        .map_err(|e| DispatchError::InvalidRequest(format!("query: {e}")))?
        .into_inner();
    if let Some(s) = &filter.state
        && !crate::metrics::STATES.contains(&s.as_str())
    {
        return Err(DispatchError::InvalidRequest(format!(
            "state: one of {:?}",
            crate::metrics::STATES
        )));
    }
    let limit = filter.limit.unwrap_or(100);
    if !(1..=state.limits.max_page_size).contains(&limit) {
        return Err(DispatchError::InvalidRequest(format!(
            "limit: 1 to {}",
            state.limits.max_page_size
        )));
    }
    let tasks = store::list_tasks(&state.pool, &filter, limit)
        .await
        .map_err(unavailable)?;
    let next_after = (tasks.len() as i64 == limit)
        .then(|| tasks.last().map(|t| t.seq))
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tasks": tasks, "next_after": next_after })))
}

async fn get_task(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, get_task_inner(&req, &state).await)
}

async fn get_task_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let id = task_id(req)?;
    let (task, attempts) = store::get_task(&state.pool, &id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| DispatchError::TaskNotFound(id.to_string()))?;
    let mut body = serde_json::to_value(task).map_err(|e| DispatchError::Unexpected(e.into()))?;
    body["attempts"] =
        serde_json::to_value(attempts).map_err(|e| DispatchError::Unexpected(e.into()))?;
    Ok(HttpResponse::Ok().json(body))
}

async fn cancel(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, cancel_inner(&req, &state).await)
}

async fn cancel_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let id = task_id(req)?;
    match store::cancel(&state.pool, &id, state.clock.now())
        .await
        .map_err(unavailable)?
    {
        store::CancelOutcome::NotFound => Err(DispatchError::TaskNotFound(id.to_string())),
        store::CancelOutcome::AlreadyFinished => Err(DispatchError::Conflict(format!(
            "task {id} has already finished"
        ))),
        outcome => Ok(HttpResponse::Ok().json(serde_json::json!({ "outcome": outcome }))),
    }
}

async fn retry(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, retry_inner(&req, &state).await)
}

async fn retry_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let id = task_id(req)?;
    match store::retry(&state.pool, &id, state.clock.now())
        .await
        .map_err(unavailable)?
    {
        None => Err(DispatchError::TaskNotFound(id.to_string())),
        Some((was, false)) => Err(DispatchError::Conflict(format!(
            "task {id} is {was}; only dead or failed tasks can be retried"
        ))),
        Some(_) => {
            state.waker.wake();
            Ok(HttpResponse::Ok().json(serde_json::json!({ "state": "queued" })))
        }
    }
}

async fn list_ignored(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, list_ignored_inner(&req, &state).await)
}

async fn list_ignored_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let events = store::list_ignored(&state.pool, state.limits.max_page_size)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events })))
}

// --- hand-off from dedup-store ------------------------------------------------------

/// One event in a relay batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayedEvent {
    pub task_id: TaskId,
    pub source: SourceName,
    pub event_uuid: EventUuid,
    pub event_type: EventType,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub trace_id: Option<TraceId>,
    /// The span that stored the event (W3C), if known.
    pub traceparent: Option<String>,
    #[serde(default)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body_base64: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayBatch {
    events: Vec<RelayedEvent>,
}

async fn accept_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, accept_events_inner(&req, payload, &state).await)
}

async fn accept_events_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    match bearer(req) {
        Some(token) if state.relays.allows(token) => {}
        _ => return Err(DispatchError::Unauthorized),
    }
    let batch: RelayBatch = json_body(req, payload, state.limits.max_request_bytes).await?;
    let mut routed = Vec::new();
    let mut ignored = Vec::new();
    for e in batch.events {
        let body = base64::engine::general_purpose::STANDARD
            .decode(e.body_base64.as_bytes())
            .map_err(|err| DispatchError::InvalidRequest(format!("events[].body_base64: {err}")))?;
        if let Some(tp) = &e.traceparent
            && !rave_service::telemetry::is_traceparent(tp)
        {
            return Err(DispatchError::InvalidRequest(format!(
                "events[].traceparent: {tp:?} is not W3C"
            )));
        }
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let mut event = IncomingEvent {
            task_id: e.task_id,
            source: e.source,
            event_uuid: e.event_uuid,
            event_type: e.event_type,
            received_at: e.received_at,
            trace_id: e.trace_id,
            traceparent: None,
            headers: e.headers,
            body,
        };
        let route = state.router.route(
            event.source.as_str(),
            event.event_type.as_str(),
            parsed.as_ref(),
        );
        match route {
            Some(r) => {
                // The task's own span, a child of the span that stored the event.
                if let Some(parent) = &e.traceparent {
                    let span = tracing::info_span!(
                        "task.create",
                        otel.name = "task.create",
                        task_id = %event.task_id,
                        kind = %r.kind
                    );
                    rave_service::telemetry::set_remote_parent(&span, parent);
                    span.in_scope(|| rave_service::telemetry::record_task_id(&event.task_id));
                    event.traceparent = rave_service::telemetry::traceparent_of(&span);
                }
                routed.push((event, r));
            }
            None => ignored.push(event),
        }
    }
    let received = (routed.len() + ignored.len()) as u64;
    let ignored_sources: Vec<String> = ignored.iter().map(|e| e.source.to_string()).collect();
    let accepted = store::accept_events(&state.pool, state.clock.now(), routed, ignored)
        .await
        .map_err(unavailable)?;
    state.metrics.events_received.inc_by(received);
    if accepted.ignored > 0 {
        for source in ignored_sources {
            state
                .metrics
                .events_ignored
                .get_or_create(&SourceLabel { source })
                .inc();
        }
    }
    for kind in &accepted.created {
        state
            .metrics
            .tasks_created
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }
    state.metrics.superseded.inc_by(accepted.superseded);
    if !accepted.created.is_empty() {
        state.waker.wake();
    }
    Ok(HttpResponse::Ok().json(&accepted))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    rave_service::http::readiness(rave_pg::ping(&state.pool).await, "PostgreSQL")
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match store::gauges(&state.pool, state.clock.now()).await {
        Ok((counts, oldest)) => state.metrics.set_task_counts(&state.kinds, &counts, oldest),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "task counts unavailable for /metrics"),
    }
    state
        .metrics
        .agents_waiting
        .set(state.waker.waiting() as i64);
    rave_service::metrics::render(&req, &state.metrics.registry)
}
