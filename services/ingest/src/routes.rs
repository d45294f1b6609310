//! HTTP routes. `POST /hooks/{source}` is the only one senders reach.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, ResponseError as _, web};
use rave_service::ids::TaskId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::IngestError;
use crate::metrics::{ErrorLabels, Metrics, OutcomeLabels, SourceLabel, UNKNOWN_SOURCE};
use crate::settings::Limits;
use crate::sources::Sources;
use crate::store_client::{StoreClient, StoreOutcome, VerifiedEvent};

#[derive(Debug)]
pub struct AppState {
    pub sources: Sources,
    pub store: StoreClient,
    pub metrics: Metrics,
    pub limits: Limits,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/hooks/{source}", web::post().to(receive_webhook))
        .route("/healthz", web::get().to(rave_service::http::healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// The answer to a stored delivery: 202 when new, 200 when a repeat.
#[derive(Debug, Serialize, Deserialize)]
pub struct Receipt {
    /// `accepted` or `duplicate`.
    pub status: String,
    pub task_id: TaskId,
    pub delivery_id: String,
}

async fn receive_webhook(
    req: HttpRequest,
    payload: web::Payload,
    source: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let source = source.into_inner();
    let label = if state.sources.get(&source).is_some() {
        source.clone()
    } else {
        UNKNOWN_SOURCE.to_owned()
    };
    let result = receive(&req, payload, &source, &state).await;
    let metrics = &state.metrics;
    let (outcome, response) = match result {
        Ok((StoreOutcome::New(task_id), delivery_id)) => {
            metrics
                .processed
                .get_or_create(&SourceLabel {
                    source: label.clone(),
                })
                .inc();
            (
                "accepted",
                receipt(HttpResponse::Accepted(), "accepted", task_id, delivery_id),
            )
        }
        Ok((StoreOutcome::Duplicate(task_id), delivery_id)) => {
            metrics
                .deduplicated
                .get_or_create(&SourceLabel {
                    source: label.clone(),
                })
                .inc();
            (
                "duplicate",
                receipt(HttpResponse::Ok(), "duplicate", task_id, delivery_id),
            )
        }
        Err(e) => {
            metrics
                .errors
                .get_or_create(&ErrorLabels {
                    source: label.clone(),
                    reason: e.code(),
                })
                .inc();
            let outcome = if e.status_code().is_server_error() {
                "failed"
            } else {
                "rejected"
            };
            (outcome, e.error_response())
        }
    };
    metrics
        .requests
        .get_or_create(&OutcomeLabels {
            source: label.clone(),
            outcome,
        })
        .inc();
    metrics
        .duration
        .get_or_create(&SourceLabel { source: label })
        .observe(
            started.elapsed().as_secs_f64(),
            rave_service::metrics::trace_exemplar(),
            None,
        );
    response
}

fn receipt(
    mut builder: actix_web::HttpResponseBuilder,
    status: &str,
    task_id: TaskId,
    delivery_id: String,
) -> HttpResponse {
    builder.json(Receipt {
        status: status.to_owned(),
        task_id,
        delivery_id,
    })
}

/// Limits → verification on the raw bytes → durable store.
async fn receive(
    req: &HttpRequest,
    payload: web::Payload,
    source: &str,
    state: &AppState,
) -> Result<(StoreOutcome, String), IngestError> {
    let source = state
        .sources
        .get(source)
        .ok_or_else(|| IngestError::UnknownSource(source.to_owned()))?;
    if req.headers().len() > state.limits.max_headers {
        return Err(IngestError::TooManyHeaders {
            limit: state.limits.max_headers,
        });
    }
    let body = rave_service::http::read_body(req, payload, state.limits.max_body_bytes)
        .await
        .map_err(|e| match e {
            rave_service::http::BodyError::TooLarge { limit } => {
                IngestError::BodyTooLarge { limit }
            }
            rave_service::http::BodyError::Read(m) => IngestError::BodyUnreadable(m),
        })?;
    let received_at = OffsetDateTime::now_utc();
    let verified = source
        .verifier
        .verify(req.headers(), &body, received_at.unix_timestamp())?;
    let outcome = state
        .store
        .store(VerifiedEvent {
            source: &source.name,
            event_uuid: &verified.event_uuid,
            event_type: &verified.event_type,
            received_at,
            headers: source.stored_headers(req.headers()),
            body: &body,
        })
        .await?;
    let task_id = match &outcome {
        StoreOutcome::New(id) | StoreOutcome::Duplicate(id) => id,
    };
    rave_service::telemetry::record_task_id(task_id);
    tracing::info!(
        source = source.name.as_str(),
        delivery_id = verified.event_uuid.as_str(),
        event_type = verified.event_type.as_str(),
        task_id = %task_id,
        duplicate = matches!(outcome, StoreOutcome::Duplicate(_)),
        "webhook stored"
    );
    Ok((outcome, verified.event_uuid.to_string()))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    rave_service::http::readiness(state.store.ready().await, "dedup-store")
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    state.metrics.refresh();
    rave_service::metrics::render(&req, &state.metrics.registry)
}
