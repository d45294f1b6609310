//! HTTP routes. `POST /hooks/{source}` is the only one senders reach.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, ResponseError as _, web};
use rave_service::ids::TaskId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::IngestError;
use crate::guard::Guard;
use crate::metrics::{ErrorLabels, Metrics, OutcomeLabels, SourceLabel, UNKNOWN_SOURCE};
use crate::settings::Limits;
use crate::sources::Sources;
use crate::spool::{Spool, SpoolError};
use crate::store_client::{StoreClient, StoreOutcome, VerifiedEvent};
use crate::verify::Verdict;
use rave_service::error::ServiceError as _;

#[derive(Debug)]
pub struct AppState {
    /// Reloaded on SIGHUP (`crate::reload`); a request keeps the sources it started with.
    pub sources: rave_service::reload::Live<Sources>,
    pub store: std::sync::Arc<StoreClient>,
    pub metrics: std::sync::Arc<Metrics>,
    pub limits: Limits,
    /// Where events wait while dedup-store is unreachable (when configured).
    pub spool: Option<std::sync::Arc<Spool>>,
    /// Bytes in flight; addresses that keep failing verification.
    pub guard: std::sync::Arc<Guard>,
}

/// What became of a verified delivery.
#[derive(Debug)]
enum Outcome {
    Stored(StoreOutcome),
    /// In the spool, fsync'd; dedup-store gets it when it is back.
    Spooled,
    /// A sender's handshake, answered with its challenge and not stored.
    Challenge,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/hooks/{source}", web::post().to(receive_webhook))
        .route("/hooks/{source}", web::route().to(wrong_method))
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
    /// The trace RAVE started for this delivery (new deliveries only): what
    /// `ravectl trace` and Grafana show. A sender's own `traceparent` is
    /// only linked to it (docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

async fn receive_webhook(
    req: HttpRequest,
    payload: web::Payload,
    source: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let source = source.into_inner();
    let label = source_label(&state, &source);
    let result = receive(&req, payload, &source, &state).await;
    let metrics = &state.metrics;
    let (outcome, response) = match result {
        // Slack wants the challenge back in the body (JSON is accepted).
        Ok((Outcome::Challenge, challenge)) => (
            "challenge",
            HttpResponse::Ok().json(serde_json::json!({ "challenge": challenge })),
        ),
        Ok((Outcome::Spooled, delivery_id)) => {
            metrics.spooled.inc();
            (
                "spooled",
                HttpResponse::Accepted().json(serde_json::json!({
                    "status": "spooled",
                    "delivery_id": delivery_id,
                })),
            )
        }
        Ok((Outcome::Stored(StoreOutcome::New(task_id)), delivery_id)) => {
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
        Ok((Outcome::Stored(StoreOutcome::Duplicate(task_id)), delivery_id)) => {
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

/// The `source` metric label: the name when configured, else one shared
/// value, so unknown names cannot grow the label set.
fn source_label(state: &AppState, source: &str) -> String {
    if state.sources.current().get(source).is_some() {
        source.to_owned()
    } else {
        UNKNOWN_SOURCE.to_owned()
    }
}

/// Anything but POST on a hook: 405, counted like every refusal.
async fn wrong_method(source: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let source = source_label(&state, &source);
    state
        .metrics
        .errors
        .get_or_create(&ErrorLabels {
            source,
            reason: "method_not_allowed",
        })
        .inc();
    let mut response = rave_service::http::error_response(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "webhooks are delivered with POST",
    );
    response.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static("POST"),
    );
    response
}

fn receipt(
    mut builder: actix_web::HttpResponseBuilder,
    status: &str,
    task_id: TaskId,
    delivery_id: String,
) -> HttpResponse {
    let trace_id = (status == "accepted")
        .then(rave_service::telemetry::current_trace_id)
        .flatten()
        .map(|t| t.to_string());
    builder.json(Receipt {
        status: status.to_owned(),
        task_id,
        delivery_id,
        trace_id,
    })
}

/// Limits → verification on the raw bytes → durable store.
async fn receive(
    req: &HttpRequest,
    payload: web::Payload,
    source: &str,
    state: &AppState,
) -> Result<(Outcome, String), IngestError> {
    let sources = state.sources.current();
    let source = sources
        .get(source)
        .ok_or_else(|| IngestError::UnknownSource(source.to_owned()))?;
    if req.headers().len() > state.limits.max_headers {
        return Err(IngestError::TooManyHeaders {
            limit: state.limits.max_headers,
        });
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > state.limits.max_header_bytes {
        return Err(IngestError::HeadersTooLarge {
            limit: state.limits.max_header_bytes,
        });
    }
    let client = crate::guard::client_address(req);
    if let Some(client) = client {
        state.guard.check(client)?;
    }
    // Room for the body among everything in flight, held to the answer.
    let expected = rave_service::http::expected_body_bytes(req, state.limits.max_body_bytes);
    let _room = state.guard.admit(expected).await?;
    let body = rave_service::http::read_body(req, payload, state.limits.max_body_bytes)
        .await
        .map_err(|e| match e {
            rave_service::http::BodyError::TooLarge { limit } => {
                IngestError::BodyTooLarge { limit }
            }
            rave_service::http::BodyError::Read(m) => IngestError::BodyUnreadable(m),
        })?;
    let received_at = OffsetDateTime::now_utc();
    let verified = match source
        .verifier
        .verify(req.headers(), &body, received_at.unix_timestamp())
    {
        Ok(Verdict::Event(verified)) => verified,
        Ok(Verdict::Challenge(challenge)) => return Ok((Outcome::Challenge, challenge)),
        Err(e) => {
            // A genuine sender is never refused for its rate: only failures
            // to authenticate count against an address.
            if let Some(client) = client
                && !e.after_authentication()
            {
                state.guard.failed(client);
            }
            return Err(e.into());
        }
    };
    let request = StoreClient::encode(VerifiedEvent {
        source: &source.name,
        event_uuid: &verified.event_uuid,
        event_type: &verified.event_type,
        received_at,
        headers: source.stored_headers(req.headers()),
        body: &body,
    });
    // Only the encoded request is needed from here on.
    drop(body);
    let outcome = match &state.spool {
        // While anything waits in the spool, new events queue behind it, so
        // the store receives them in the order they were acknowledged; while
        // the replayer sends the last of it, they wait for it instead, so
        // the spool empties even under load.
        Some(spool) if !spool.wait_for_empty(state.store.timeout()).await => {
            spool_event(spool, request, received_at, state, None).await?
        }
        Some(spool) => match state.store.store(request.clone()).await {
            Err(IngestError::StoreUnavailable { cause, .. }) => {
                spool_event(spool, request, received_at, state, Some(cause)).await?
            }
            other => Outcome::Stored(other?),
        },
        None => Outcome::Stored(state.store.store(request).await?),
    };
    let outcome = match outcome {
        Outcome::Spooled => {
            tracing::info!(
                source = source.name.as_str(),
                delivery_id = verified.event_uuid.as_str(),
                event_type = verified.event_type.as_str(),
                "webhook spooled"
            );
            return Ok((Outcome::Spooled, verified.event_uuid.to_string()));
        }
        Outcome::Stored(outcome) => outcome,
        Outcome::Challenge => unreachable!("answered before storing"),
    };
    let task_id = match &outcome {
        StoreOutcome::New(id) | StoreOutcome::Duplicate(id) => id,
    };
    rave_service::telemetry::record_task_id(task_id);
    tracing::info!(
        target: rave_service::telemetry::REQUEST_LOG,
        source = source.name.as_str(),
        delivery_id = verified.event_uuid.as_str(),
        event_type = verified.event_type.as_str(),
        task_id = %task_id,
        duplicate = matches!(outcome, StoreOutcome::Duplicate(_)),
        "webhook stored"
    );
    Ok((Outcome::Stored(outcome), verified.event_uuid.to_string()))
}

/// Appends to the spool (fsync on a blocking thread); a full spool is 503.
async fn spool_event(
    spool: &std::sync::Arc<Spool>,
    request: web::Bytes,
    received_at: OffsetDateTime,
    state: &AppState,
    store_error: Option<anyhow::Error>,
) -> Result<Outcome, IngestError> {
    if let Some(cause) = &store_error {
        tracing::warn!(
            error = format!("{cause:#}"),
            "dedup-store unreachable: spooling"
        );
    }
    let spool = spool.clone();
    let appended = tokio::task::spawn_blocking(move || spool.append(&request, received_at))
        .await
        .map_err(|e| IngestError::Unexpected(e.into()))?;
    match appended {
        Ok(()) => Ok(Outcome::Spooled),
        Err(e @ SpoolError::Full { .. }) => Err(IngestError::StoreUnavailable {
            retry_after_secs: state.store.retry_after_secs(),
            cause: anyhow::Error::new(e),
        }),
        Err(SpoolError::Io(e)) => Err(IngestError::Unexpected(
            anyhow::Error::new(e).context("appending to the spool"),
        )),
    }
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    rave_service::http::readiness(state.store.ready().await, "dedup-store")
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .refresh(state.spool.as_ref().map(|spool| spool.depth()));
    state
        .metrics
        .in_flight_bytes
        .set(state.guard.in_flight_bytes() as i64);
    rave_service::metrics::render(&req, &state.metrics.registry)
}
