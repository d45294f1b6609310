//! `POST /v1/reconcile/{source}`: an operator's run of the reconciler
//! (`ravectl reconcile`), a dry run unless it says otherwise.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::error::DedupError;
use crate::routes::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// Look back this far (at most the provider's log: 3 days on GitHub).
    pub since_secs: u64,
    /// Only list what would be redelivered (the default).
    #[serde(default = "yes")]
    pub dry_run: bool,
}

fn yes() -> bool {
    true
}

pub async fn reconcile(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DedupError> {
    crate::routes::counted(&state, reconcile_inner(&req, payload, &state).await)
}

async fn reconcile_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, DedupError> {
    crate::routes::authorized(req, &state.readers)?;
    let raw = rave_service::http::read_body(req, payload, 4 * 1024).await?;
    let request: ReconcileRequest = serde_json::from_slice(&raw)
        .map_err(|e| DedupError::InvalidRequest(format!("invalid reconcile request: {e}")))?;
    let source = req.match_info().get("source").unwrap_or_default();
    let Some(reconciler) = &state.reconciler else {
        return Err(DedupError::NotReconciled(source.to_owned()));
    };
    const MAX_SINCE: u64 = 7 * 24 * 3600;
    if request.since_secs == 0 || request.since_secs > MAX_SINCE {
        return Err(DedupError::InvalidRequest(format!(
            "since_secs: must be 1 to {MAX_SINCE} (no provider keeps its log longer)"
        )));
    }
    let now = OffsetDateTime::now_utc();
    let run = super::Run {
        since: now - Duration::from_secs(request.since_secs),
        now,
        dry_run: request.dry_run,
    };
    let report = reconciler
        .reconcile(source, run)
        .await
        .ok_or_else(|| DedupError::NotReconciled(source.to_owned()))?;
    Ok(HttpResponse::Ok().json(report))
}
