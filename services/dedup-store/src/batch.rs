//! `POST /v1/events/batch`: ingest's events, many per call.
//!
//! Each event is answered, in order, as its own `POST /v1/events` would
//! have been (`status` is that call's code), and all of them join the same
//! group commit. One event that cannot be stored never fails the others;
//! only what concerns the whole call does (token, size, JSON, item count).
//! Each item may name its webhook's `traceparent`: the event is stored in a
//! span of that trace, which is the trace its task then continues.

use actix_web::{HttpRequest, HttpResponse, web};
use rave_service::error::ServiceError as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::Instrument as _;

use crate::error::DedupError;
use crate::routes::{AppState, InsertRequest, authorized, counted, stored, validate};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    events: Vec<Box<RawValue>>,
}

/// One item: the event as `POST /v1/events` takes it, and its trace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    #[serde(default)]
    traceparent: Option<String>,
    event: InsertRequest,
}

pub(crate) async fn insert_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DedupError> {
    counted(&state, insert_batch_inner(&req, payload, &state).await)
}

async fn insert_batch_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, DedupError> {
    authorized(req, &state.writers)?;
    let raw =
        rave_service::http::read_body(req, payload, state.limits.max_batch_request_bytes).await?;
    let batch: BatchRequest = serde_json::from_slice(&raw)
        .map_err(|e| DedupError::InvalidRequest(format!("invalid batch: {e}")))?;
    let max = state.limits.max_events_per_call;
    if batch.events.len() > max {
        return Err(DedupError::InvalidRequest(format!(
            "events: at most {max} per call"
        )));
    }
    let answers =
        rave_service::join_all(batch.events.iter().map(|item| store_item(state, item))).await;
    let results = answers
        .into_iter()
        .map(|answer| match answer {
            // The store failing for one item (its queue full, a commit
            // failed twice) is that item's answer: the others may be stored.
            Err(DedupError::Unavailable(cause)) => {
                tracing::warn!(error = format!("{cause:#}"), "batch item not stored");
                let e = DedupError::Unavailable(cause);
                let answer = serde_json::json!({
                    "status": 503,
                    "error": { "code": e.code(), "message": e.to_string() },
                });
                let _ = counted(state, Err::<(), _>(e));
                Ok(answer)
            }
            answer => rave_service::error::item_answer(&state.metrics.rejected, answer),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "results": results })))
}

async fn store_item(state: &AppState, raw: &RawValue) -> Result<serde_json::Value, DedupError> {
    if raw.get().len() > state.limits.max_request_bytes {
        return Err(DedupError::BodyTooLarge {
            limit: state.limits.max_request_bytes,
        });
    }
    let item: BatchItem = serde_json::from_str(raw.get())
        .map_err(|e| DedupError::InvalidRequest(format!("invalid event: {e}")))?;
    let span = tracing::info_span!("event.store", source = item.event.source.as_str());
    if let Some(parent) = &item.traceparent {
        if !rave_service::telemetry::is_traceparent(parent) {
            return Err(DedupError::InvalidRequest(
                "traceparent: must be a W3C traceparent".into(),
            ));
        }
        rave_service::telemetry::set_remote_parent(&span, parent);
    }
    // Inside the item's span, so that the event records its own trace.
    let event = span.in_scope(|| validate(item.event, &state.limits))?;
    let (status, answer) = stored(state, event).instrument(span).await?;
    let mut answer = serde_json::to_value(answer).map_err(|e| DedupError::Unexpected(e.into()))?;
    answer["status"] = status.as_u16().into();
    Ok(answer)
}
