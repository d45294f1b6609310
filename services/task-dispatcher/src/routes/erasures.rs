//! Erasures from dedup-store's relay: an operator erased these tasks'
//! events, so their payloads (the event's headers and body) go too.

use actix_web::{HttpRequest, HttpResponse, web};
use rave_service::ids::TaskId;
use serde::Deserialize;

use super::{AppState, Reply, counted, json_body, unavailable};
use crate::auth::bearer;
use crate::error::DispatchError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Erasure {
    task_id: TaskId,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Erasures {
    erasures: Vec<Erasure>,
}

/// The most erasures in one call (the relay sends its batch size).
const MAX_ERASURES: usize = 1000;

pub(super) async fn erase(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, erase_inner(&req, payload, &state).await)
}

async fn erase_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    match bearer(req) {
        Some(token) if state.live.current().relays.allows(token) => {}
        _ => return Err(DispatchError::Unauthorized),
    }
    let batch: Erasures = json_body(req, payload, state.limits.max_request_bytes).await?;
    if batch.erasures.len() > MAX_ERASURES {
        return Err(DispatchError::InvalidRequest(format!(
            "erasures: at most {MAX_ERASURES} in one call"
        )));
    }
    let mut ids = Vec::with_capacity(batch.erasures.len());
    let mut reasons = Vec::with_capacity(batch.erasures.len());
    for e in batch.erasures {
        ids.push(e.task_id.to_string());
        reasons.push(rave_service::content::storable_text(&e.reason, 500));
    }
    let erased = crate::store::erase(&state.pool, state.clock.now(), &ids, &reasons)
        .await
        .map_err(unavailable)?;
    state.metrics.payloads_erased.inc_by(erased.payloads);
    tracing::warn!(
        tasks = ids.len(),
        payloads = erased.payloads,
        cancelled = erased.cancelled,
        "task payloads erased: their events were erased on request"
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "tasks": ids.len(),
        "payloads_erased": erased.payloads,
        "cancelled": erased.cancelled,
    })))
}
