//! `POST /v1/reports` and the usual health and metrics routes.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use rave_pg::Pool;
use rave_service::auth::{Agents, bearer};
use rave_service::clock::Clock;
use tokio::sync::Notify;

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
    // The agent is whoever holds the token; a report cannot name another.
    let agent = bearer(req)
        .and_then(|t| state.agents.authenticate(t))
        .ok_or(ReportError::Unauthorized)?;
    rave_service::limit::admit(state.agent_limit.as_ref(), &agent.id)
        .map_err(|retry_after_secs| ReportError::RateLimited { retry_after_secs })?;
    let body = rave_service::http::read_body(req, payload, state.limits.max_report_bytes)
        .await
        .map_err(|e| match e {
            rave_service::http::BodyError::TooLarge { limit } => {
                ReportError::BodyTooLarge { limit }
            }
            rave_service::http::BodyError::Read(m) => ReportError::InvalidJson(m),
        })?;
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return Err(ReportError::InvalidJson(e.to_string()));
    }
    let report = Report::parse(&body).map_err(ReportError::InvalidReport)?;
    report
        .validate(&state.limits)
        .map_err(ReportError::InvalidReport)?;
    rave_service::telemetry::record_task_id(&report.task_id);
    let task_id = report.task_id.clone();
    let status_label = report.status.as_str();
    let recorded = state
        .recorder
        .submit(Pending {
            agent: agent.id.clone(),
            report,
            now: state.clock.now(),
            bytes: body.len(),
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
    tracing::info!(target: rave_service::telemetry::REQUEST_LOG, agent = %agent.id, task_id = %task_id, status = status_label, outcome, "job report");
    Ok(HttpResponse::build(status).json(serde_json::json!({ "status": outcome })))
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
