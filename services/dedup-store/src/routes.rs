//! HTTP routes. Handlers parse into domain types at the edge and return
//! `DedupError`, which becomes HTTP in `error.rs` alone.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rave_pg::Pool;
use rave_service::ids::{EventType, EventUuid, SourceName, TaskId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use rave_service::auth::TokenSet;

use crate::error::DedupError;
use crate::metrics::Metrics;
use crate::settings::Limits;
use crate::store::{self, GroupCommitter, NewEvent, Stored};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub pool: Pool,
    pub committer: GroupCommitter,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// ingest: may store events.
    pub writers: TokenSet,
    /// Operators: may read them, and erase them.
    pub readers: TokenSet,
    /// Asks task-dispatcher to erase its copies of erased events.
    pub relay: Option<crate::relay::Relay>,
    /// Runs `POST /v1/reconcile/{source}`, when a source is configured.
    pub reconciler: Option<crate::reconcile::Reconciler>,
}

/// Refuses a request whose bearer token is not one of `allowed` (before its
/// body is read); returns the token.
pub(crate) fn authorized<'r>(
    req: &'r HttpRequest,
    allowed: &TokenSet,
) -> Result<&'r str, DedupError> {
    match rave_service::auth::bearer(req) {
        Some(token) if allowed.allows(token) => Ok(token),
        _ => Err(DedupError::Unauthorized),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/events", web::post().to(insert_event))
        .route(
            "/v1/events/batch",
            web::post().to(crate::batch::insert_batch),
        )
        .route("/v1/events", web::get().to(list_events))
        .route("/v1/events/erase", web::post().to(crate::erase::erase))
        .route("/v1/events/search", web::post().to(crate::search::handle))
        .route("/v1/events/{source}/{event_uuid}", web::get().to(get_event))
        .route(
            "/v1/reconcile/{source}",
            web::post().to(crate::reconcile::route::reconcile),
        )
        .route("/healthz", web::get().to(rave_service::http::healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Counts every refusal by its code, then passes the result on.
pub(crate) fn counted<T>(state: &AppState, result: Result<T, DedupError>) -> Result<T, DedupError> {
    rave_service::error::counted(&state.metrics.rejected, result)
}

/// `POST /v1/events` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsertRequest {
    pub source: SourceName,
    pub event_uuid: EventUuid,
    pub event_type: EventType,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The verified raw body, base64 (standard alphabet, padded).
    pub body_base64: String,
}

/// `POST /v1/events` answer: 201 when new, 200 when a duplicate.
#[derive(Debug, Serialize, Deserialize)]
pub struct InsertResponse {
    pub task_id: TaskId,
    pub duplicate: bool,
}

async fn insert_event(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DedupError> {
    counted(&state, insert_event_inner(req, payload, &state).await)
}

async fn insert_event_inner(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, DedupError> {
    authorized(&req, &state.writers)?;
    let raw = rave_service::http::read_body(&req, payload, state.limits.max_request_bytes).await?;
    let request: InsertRequest = serde_json::from_slice(&raw)
        .map_err(|e| DedupError::InvalidRequest(format!("invalid event: {e}")))?;
    let event = validate(request, &state.limits)?;
    let span = tracing::Span::current();
    span.record("source", event.source.as_str());
    let (status, answer) = stored(state, event).await?;
    Ok(HttpResponse::build(status).json(answer))
}

/// Stores `event` through the group commit: 201 when new, 200 when a
/// duplicate, with its task id (recorded on the current span).
pub(crate) async fn stored(
    state: &AppState,
    event: NewEvent,
) -> Result<(actix_web::http::StatusCode, InsertResponse), DedupError> {
    let outcome = state
        .committer
        .submit(event)
        .await
        .map_err(|e| DedupError::Unavailable(anyhow::Error::new(e)))?;
    let (status, task_id, duplicate) = match outcome {
        Stored::New(id) => (actix_web::http::StatusCode::CREATED, id, false),
        Stored::Duplicate(id) => (actix_web::http::StatusCode::OK, id, true),
    };
    rave_service::telemetry::record_task_id(&task_id);
    tracing::info!(target: rave_service::telemetry::REQUEST_LOG, task_id = %task_id, duplicate, "event stored");
    Ok((status, InsertResponse { task_id, duplicate }))
}

pub(crate) fn validate(request: InsertRequest, limits: &Limits) -> Result<NewEvent, DedupError> {
    if request.headers.len() > limits.max_headers {
        return Err(DedupError::InvalidRequest(format!(
            "headers: at most {} headers may be stored",
            limits.max_headers
        )));
    }
    for (name, value) in &request.headers {
        let valid_name = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(DedupError::InvalidRequest(format!(
                "headers: {name:?} is not a lower-case header name"
            )));
        }
        let Some(value) = value.as_str() else {
            return Err(DedupError::InvalidRequest(format!(
                "headers.{name}: must be a string of at most 4096 bytes"
            )));
        };
        if value.len() > 4096 {
            return Err(DedupError::InvalidRequest(format!(
                "headers.{name}: must be a string of at most 4096 bytes"
            )));
        }
        // Stored as jsonb, which cannot hold NUL: refused here, not by the
        // group commit that carries other callers' events.
        rave_service::content::check_text(&format!("headers.{name}"), value, 4096)?;
    }
    let body = BASE64
        .decode(request.body_base64.as_bytes())
        .map_err(|e| DedupError::InvalidRequest(format!("body_base64: {e}")))?;
    Ok(NewEvent {
        source: request.source,
        event_uuid: request.event_uuid,
        event_type: request.event_type,
        trace_id: rave_service::telemetry::current_trace_id(),
        traceparent: rave_service::telemetry::current_traceparent(),
        received_at: request.received_at,
        headers: request.headers,
        body_json: NewEvent::searchable(&body),
        body,
    })
}

/// `GET /v1/events/{source}/{event_uuid}` answer.
#[derive(Debug, Serialize)]
pub struct EventResponse {
    #[serde(flatten)]
    pub record: store::EventRecord,
    pub headers: serde_json::Value,
    pub body_base64: String,
}

async fn get_event(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DedupError> {
    counted(&state, get_event_inner(&req, &state).await)
}

async fn get_event_inner(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, DedupError> {
    authorized(req, &state.readers)?;
    let param = |name| req.match_info().get(name).unwrap_or_default().to_owned();
    let (source_raw, uuid_raw) = (param("source"), param("event_uuid"));
    let source = SourceName::parse(source_raw.clone())
        .map_err(|e| DedupError::InvalidRequest(e.to_string()))?;
    let event_uuid = EventUuid::parse(uuid_raw.clone())
        .map_err(|e| DedupError::InvalidRequest(e.to_string()))?;
    let found = store::get_event(&state.pool, &source, &event_uuid)
        .await
        .map_err(DedupError::Unavailable)?;
    let (record, headers, body) = found.ok_or(DedupError::NotFound {
        source_name: source_raw,
        event_uuid: uuid_raw,
    })?;
    Ok(HttpResponse::Ok().json(EventResponse {
        record,
        headers,
        body_base64: BASE64.encode(body),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    source: Option<SourceName>,
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

/// `GET /v1/events` answer: a page in storage order.
#[derive(Debug, Serialize)]
pub struct ListResponse {
    pub events: Vec<store::EventRecord>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

async fn list_events(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DedupError> {
    counted(&state, list_events_inner(&req, &state).await)
}

async fn list_events_inner(
    req: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, DedupError> {
    authorized(req, &state.readers)?;
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| DedupError::InvalidRequest(format!("query: {e}")))?
        .into_inner();
    let limit = query.limit.unwrap_or(100);
    if !(1..=state.limits.max_page_size).contains(&limit) {
        return Err(DedupError::InvalidRequest(format!(
            "limit: must be between 1 and {}",
            state.limits.max_page_size
        )));
    }
    let events = store::list_events(&state.pool, query.source.as_ref(), query.after, limit)
        .await
        .map_err(DedupError::Unavailable)?;
    let next_after = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(HttpResponse::Ok().json(ListResponse { events, next_after }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    rave_service::http::readiness(rave_pg::ping(&state.pool).await, "PostgreSQL")
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let status = state.pool.status();
    state
        .metrics
        .pool_in_use
        .set((status.size - status.available) as i64);
    state.metrics.pool_max.set(status.max_size as i64);
    match crate::store::outbox_gauges(&state.pool).await {
        Ok(o) => {
            state.metrics.outbox_depth.set(o.depth);
            state.metrics.outbox_oldest_age.set(o.oldest_age_secs);
            state.metrics.outbox_refused.set(o.refused);
            state
                .metrics
                .erasures_unforwarded
                .set(o.erasures_unforwarded);
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "outbox gauges unavailable for /metrics")
        }
    }
    rave_service::metrics::render(&req, &state.metrics.registry)
}
