//! The operators' quarantine: events that could not become a task or an
//! ignore record, listed with their reason and retried one at a time (for
//! example after a routing rule is fixed).

use actix_web::{HttpRequest, HttpResponse, web};

use super::internal::{count_quarantined, take_in};
use super::{AppState, Reply, counted, operator, unavailable};
use crate::error::DispatchError;
use crate::store;

pub(super) async fn list(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, list_inner(&req, &state).await)
}

async fn list_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let events = store::list_quarantined(&state.pool, state.limits.max_page_size)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events })))
}

pub(super) async fn retry(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, retry_inner(&req, &state).await)
}

/// Takes the event in again with today's rules: 200 with what became of it
/// (the quarantine record goes in the same transaction as its task or ignore
/// record), or 409 with the reason it is still set aside.
async fn retry_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let raw_id = req.match_info().get("id").unwrap_or_default();
    let id: i64 = raw_id.parse().map_err(|_| {
        DispatchError::InvalidRequest(format!("{raw_id:?} is not a quarantine record id"))
    })?;
    let event = store::quarantined_event(&state.pool, id)
        .await
        .map_err(unavailable)?
        .ok_or(DispatchError::QuarantineRecordNotFound(id))?;
    let raw: serde_json::Value = serde_json::from_slice(&event).unwrap_or_default();
    let (accepted, still) = take_in(state, vec![raw]).await?;
    if let Some(q) = still.first() {
        store::requarantine(&state.pool, id, &q.reason, state.clock.now())
            .await
            .map_err(unavailable)?;
        count_quarantined(state, &still);
        return Err(DispatchError::Conflict(format!(
            "still quarantined: {}",
            q.reason
        )));
    }
    // A redelivery found its task or ignore record already there: the record
    // is no longer needed either.
    store::release(&state.pool, id).await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(accepted))
}
