//! HTTP routes, one file per API, each with its own bearer tokens:
//! - `agents`: claim, heartbeat;
//! - `finish`: complete and fail, one task or many per call;
//! - `operators`: task reads, listings, ignored events, cancel, retry;
//! - `internal`: the hand-off from dedup-store's relay;
//! - `erasures`: erased events' payloads, also from the relay;
//! - `quarantine`: events set aside, listed and retried by operators;
//! - `replays`: operators' replays of stored events and what-if routing.
//!
//! Here: the shared state, the route table, and what every handler uses
//! (refusals counted once, JSON bodies, bearer checks).

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use rave_pg::Pool;
use rave_service::batch::Batcher;
use rave_service::ids::{TaskId, TraceId};
use serde::de::DeserializeOwned;

use crate::auth::{Agent, Agents, TokenSet, bearer};
use crate::clock::Clock;
use crate::error::DispatchError;
use crate::metrics::Metrics;
use crate::routing::Router;
use crate::settings::{ClaimSettings, Limits, RetrySettings};
use crate::store::{self, Completion, Finished, Refusal};
use crate::waker::Waker;

pub type Completer = Batcher<Completion, Result<Finished, Refusal>>;

#[derive(Debug)]
pub struct AppState {
    pub pool: Pool,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub waker: Arc<Waker>,
    pub completer: Completer,
    /// Routes, agents and tokens: reloaded on SIGHUP (`crate::reload`).
    pub live: rave_service::reload::Live<LiveSettings>,
    pub claim: ClaimSettings,
    pub retry: RetrySettings,
    pub limits: Limits,
    /// When `/metrics` last counted tasks, and how long that count serves.
    pub gauges_counted_at: tokio::sync::Mutex<Option<std::time::Instant>>,
    pub gauges_max_age: std::time::Duration,
    /// dedup-store's search, for replays and what-if routing (ADR 19).
    pub events_store: Option<Arc<crate::replay::client::EventsStore>>,
    pub replay: crate::settings::ReplaySettings,
    /// Requests per agent (`limits.agent_requests`), when limited.
    pub agent_limit: Option<rave_service::limit::KeyedLimit<rave_service::ids::AgentId>>,
}

/// What a reload swaps in whole. A request takes it once, when it starts.
#[derive(Debug)]
pub struct LiveSettings {
    pub router: Router,
    pub agents: Agents,
    pub operators: TokenSet,
    pub relays: TokenSet,
    /// Every kind routed since the start (a reload adds kinds, never drops
    /// one: tasks of a kind no longer routed are still counted).
    pub kinds: Vec<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/agents/claim", web::post().to(agents::claim))
        .route(
            "/v1/tasks/{task_id}/heartbeat",
            web::post().to(agents::heartbeat),
        )
        .route(
            "/v1/tasks/{task_id}/complete",
            web::post().to(finish::complete),
        )
        .route("/v1/tasks/{task_id}/fail", web::post().to(finish::fail))
        .route("/v1/agents/results", web::post().to(finish::results))
        .route("/v1/tasks", web::get().to(operators::list_tasks))
        .route("/v1/tasks/{task_id}", web::get().to(operators::get_task))
        .route(
            "/v1/tasks/{task_id}/cancel",
            web::post().to(operators::cancel),
        )
        .route(
            "/v1/tasks/{task_id}/retry",
            web::post().to(operators::retry),
        )
        .route("/v1/ignored-events", web::get().to(operators::list_ignored))
        .route("/v1/quarantined-events", web::get().to(quarantine::list))
        .route(
            "/v1/quarantined-events/{id}/retry",
            web::post().to(quarantine::retry),
        )
        .route(
            "/v1/internal/events",
            web::post().to(internal::accept_events),
        )
        .route("/v1/internal/erasures", web::post().to(erasures::erase))
        .route("/v1/replays", web::post().to(replays::replay))
        .route("/v1/replays/{request_id}", web::get().to(replays::get))
        .route("/v1/routes/diff", web::post().to(replays::diff))
        .route("/healthz", web::get().to(rave_service::http::healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

type Reply = Result<HttpResponse, DispatchError>;

/// Counts every refusal by its code, then passes the result on.
fn counted(state: &AppState, result: Reply) -> Reply {
    rave_service::error::counted(&state.metrics.rejected, result)
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

/// The agent holding the request's token, within its request rate.
fn agent(req: &HttpRequest, state: &AppState) -> Result<Agent, DispatchError> {
    let agent = bearer(req)
        .and_then(|token| state.live.current().agents.authenticate(token).cloned())
        .ok_or(DispatchError::Unauthorized)?;
    rave_service::limit::admit(state.agent_limit.as_ref(), &agent.id)
        .map_err(|retry_after_secs| DispatchError::RateLimited { retry_after_secs })?;
    Ok(agent)
}

fn operator(req: &HttpRequest, state: &AppState) -> Result<(), DispatchError> {
    match bearer(req) {
        Some(token) if state.live.current().operators.allows(token) => Ok(()),
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

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    rave_service::http::readiness(rave_pg::ping(&state.pool).await, "PostgreSQL")
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // One count at a time, reused while fresh: scrapes cost no queries.
    let mut counted_at = state.gauges_counted_at.lock().await;
    if counted_at.is_none_or(|at| at.elapsed() >= state.gauges_max_age) {
        match count_gauges(&state).await {
            Ok(()) => *counted_at = Some(std::time::Instant::now()),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "task counts unavailable for /metrics")
            }
        }
    }
    drop(counted_at);
    state
        .metrics
        .agents_waiting
        .set(state.waker.waiting() as i64);
    rave_service::metrics::render(&req, &state.metrics.registry)
}

async fn count_gauges(state: &AppState) -> anyhow::Result<()> {
    let (counts, oldest) = store::gauges(&state.pool, state.clock.now()).await?;
    let live = state.live.current();
    state.metrics.set_task_counts(&live.kinds, &counts, oldest);
    let quarantined = store::quarantined_count(&state.pool).await?;
    state.metrics.quarantined.set(quarantined);
    Ok(())
}

mod agents;
mod erasures;
mod finish;
mod internal;
mod operators;
mod quarantine;
mod replays;

pub use finish::backoff;
pub use internal::RelayedEvent;
pub use replays::proposed_router;
