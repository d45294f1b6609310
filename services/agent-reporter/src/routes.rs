//! `POST /v1/reports`, `POST /v1/reports/batch` and the usual health and metrics routes.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use rave_pg::Pool;
use rave_service::auth::{Agents, bearer};
use rave_service::clock::Clock;
use rave_service::ids::{AgentId, TaskId};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tracing::Instrument as _;

use crate::error::ReportError;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::record::{Pending, Recorded, Recorder};
use crate::report::Report;
use crate::settings::Limits;
use crate::store;

#[derive(Debug)]
pub struct AppState {
    pub pool: Pool,
    pub agents: Agents,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub clock: Arc<dyn Clock>,
    pub started_at: time::OffsetDateTime,
    /// Reports arriving together commit together.
    pub recorder: Recorder,
    /// Wakes the pusher.
    pub reported: Arc<Notify>,
    /// Reports per agent (`limits.agent_requests`), when limited.
    pub agent_limit: Option<rave_service::limit::KeyedLimit<rave_service::ids::AgentId>>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/reports", web::post().to(report))
        .route("/v1/reports/batch", web::post().to(report_batch))
        .route("/healthz", web::get().to(rave_service::http::healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn report(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ReportError> {
    rave_service::error::counted(
        &state.metrics.rejected,
        report_inner(&req, payload, &state).await,
    )
}

async fn report_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ReportError> {
    let agent = admitted(req, state)?;
    let body = read_body(req, payload, state.limits.max_report_bytes).await?;
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return Err(ReportError::InvalidJson(e.to_string()));
    }
    let recorded = record_one(state, &agent, &body).await?;
    Ok(
        HttpResponse::build(recorded.status)
            .json(serde_json::json!({ "status": recorded.outcome })),
    )
}

/// `POST /v1/reports/batch` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    reports: Vec<Box<RawValue>>,
}

/// `POST /v1/reports/batch`: many reports of one agent in one call, each
/// answered, in order, as its own `POST /v1/reports` would have been
/// (`status` is that call's HTTP code). They join the same group commit as
/// single reports. Only what fails every item fails the call: too many
/// items, the body's size or JSON, or the store (a repeat of the whole call
/// is safe: each report is idempotent).
async fn report_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ReportError> {
    rave_service::error::counted(
        &state.metrics.rejected,
        report_batch_inner(&req, payload, &state).await,
    )
}

async fn report_batch_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ReportError> {
    // One call is one request against the agent's rate limit; the number of
    // items per call is bounded separately.
    let agent = admitted(req, state)?;
    let body = read_body(req, payload, state.limits.max_batch_bytes).await?;
    let batch: BatchRequest =
        serde_json::from_slice(&body).map_err(|e| ReportError::InvalidJson(e.to_string()))?;
    let max = state.limits.max_reports_per_call;
    if batch.reports.len() > max {
        return Err(ReportError::InvalidReport(crate::report::Invalid {
            path: "reports".into(),
            reason: format!("at most {max} per call"),
        }));
    }
    let answers = futures_util::future::join_all(batch.reports.iter().map(|raw| async {
        if raw.get().len() > state.limits.max_report_bytes {
            return Err(ReportError::BodyTooLarge {
                limit: state.limits.max_report_bytes,
            });
        }
        record_one(state, &agent, raw.get().as_bytes()).await
    }))
    .await;
    let results = answers
        .into_iter()
        .zip(&batch.reports)
        .map(|(answer, raw)| {
            // A refused report is read again only for its task id, if any.
            let task_id = match &answer {
                Ok(recorded) => Some(recorded.task_id.to_string()),
                Err(_) => serde_json::from_str::<TaskIdEcho>(raw.get())
                    .ok()
                    .and_then(|echo| echo.task_id),
            };
            let answer = answer.map(|recorded| {
                serde_json::json!({
                    "status": recorded.status.as_u16(),
                    "outcome": recorded.outcome,
                })
            });
            let mut item = rave_service::error::item_answer(&state.metrics.rejected, answer)?;
            item["task_id"] = task_id.map_or(serde_json::Value::Null, serde_json::Value::String);
            Ok(item)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "results": results })))
}

/// An item's `task_id`, echoed in its answer when it has one.
#[derive(Deserialize)]
struct TaskIdEcho {
    task_id: Option<String>,
}

/// The calling agent, once its token and its rate limit let it in. The
/// agent is whoever holds the token; a report cannot name another.
fn admitted(req: &HttpRequest, state: &AppState) -> Result<AgentId, ReportError> {
    let agent = bearer(req)
        .and_then(|t| state.agents.authenticate(t))
        .ok_or(ReportError::Unauthorized)?;
    rave_service::limit::admit(state.agent_limit.as_ref(), &agent.id)
        .map_err(|retry_after_secs| ReportError::RateLimited { retry_after_secs })?;
    Ok(agent.id.clone())
}

async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ReportError> {
    rave_service::http::read_body(req, payload, limit)
        .await
        .map_err(|e| match e {
            rave_service::http::BodyError::TooLarge { limit } => {
                ReportError::BodyTooLarge { limit }
            }
            rave_service::http::BodyError::Read(m) => ReportError::InvalidJson(m),
        })
}

/// A report's answer: its HTTP status and outcome.
struct Answer {
    status: actix_web::http::StatusCode,
    outcome: &'static str,
    task_id: TaskId,
}

/// Parses, checks and records one report (JSON already known well-formed
/// for a single call; a batch's items are well-formed by construction).
async fn record_one(state: &AppState, agent: &AgentId, body: &[u8]) -> Result<Answer, ReportError> {
    let report = Report::parse(body).map_err(ReportError::InvalidReport)?;
    report
        .validate(&state.limits)
        .map_err(ReportError::InvalidReport)?;
    // A report naming its job's trace is recorded in a span of that trace;
    // otherwise in the request's own span.
    let span = match &report.traceparent {
        Some(parent) => {
            let span = tracing::info_span!("report.record", task_id = %report.task_id);
            rave_service::telemetry::set_remote_parent(&span, parent);
            span
        }
        None => tracing::Span::current(),
    };
    span.in_scope(|| rave_service::telemetry::record_task_id(&report.task_id));
    record_checked(state, agent, report, body.len())
        .instrument(span)
        .await
}

async fn record_checked(
    state: &AppState,
    agent: &AgentId,
    report: Report,
    bytes: usize,
) -> Result<Answer, ReportError> {
    let task_id = report.task_id.clone();
    let status_label = report.status.as_str();
    let recorded = state
        .recorder
        .submit(Pending {
            agent: agent.clone(),
            report,
            now: state.clock.now(),
            bytes,
        })
        .await
        .map_err(|e| ReportError::Unavailable(anyhow::Error::new(e)))?;
    let (status, outcome) = match recorded {
        Recorded::New => (actix_web::http::StatusCode::ACCEPTED, "accepted"),
        Recorded::Duplicate => (actix_web::http::StatusCode::OK, "duplicate"),
        Recorded::TooManySeries => {
            return Err(ReportError::TooManySeries(
                state.limits.max_series_per_agent,
            ));
        }
        Recorded::Unstorable => {
            return Err(ReportError::InvalidReport(crate::report::Invalid {
                path: "report".into(),
                reason: "holds a value PostgreSQL cannot store".into(),
            }));
        }
    };
    state
        .metrics
        .reports
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
    if recorded == Recorded::New {
        state.reported.notify_one();
    }
    tracing::info!(target: rave_service::telemetry::REQUEST_LOG, agent = %agent, task_id = %task_id, status = status_label, outcome, "job report");
    Ok(Answer {
        status,
        outcome,
        task_id,
    })
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    rave_service::http::readiness(rave_pg::ping(&state.pool).await, "PostgreSQL")
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Ok(backlog) = store::backlog(&state.pool).await {
        state.metrics.unpushed_groups.set(backlog.unpushed_groups);
        state.metrics.buffered_reports.set(backlog.buffered_reports);
        // From the reports themselves, not the re-push time: a silent
        // agent's group is re-pushed for a day and looks fresh there.
        // Without any report yet, at least as long as this replica has run.
        let since = backlog.last_report_at.unwrap_or(state.started_at);
        let age = (state.clock.now() - since).as_seconds_f64().max(0.0);
        state.metrics.last_report_age.set(age);
    }
    rave_service::metrics::render(&req, &state.metrics.registry)
}
