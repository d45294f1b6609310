//! The internal hand-off: dedup-store's relay posts batches of stored
//! events; each becomes a task or an ignore record.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use rave_service::ids::{EventType, EventUuid, SourceName, TaskId, TraceId};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{AppState, Reply, counted, json_body, unavailable};
use crate::auth::bearer;
use crate::error::DispatchError;
use crate::metrics::{KindLabel, SourceLabel};
use crate::store::{self, IncomingEvent};

/// One event in a relay batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayedEvent {
    pub task_id: TaskId,
    pub source: SourceName,
    pub event_uuid: EventUuid,
    pub event_type: EventType,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub trace_id: Option<TraceId>,
    /// The span that stored the event (W3C), if known.
    pub traceparent: Option<String>,
    #[serde(default)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body_base64: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayBatch {
    events: Vec<RelayedEvent>,
}

pub(super) async fn accept_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, accept_events_inner(&req, payload, &state).await)
}

async fn accept_events_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    match bearer(req) {
        Some(token) if state.relays.allows(token) => {}
        _ => return Err(DispatchError::Unauthorized),
    }
    let batch: RelayBatch = json_body(req, payload, state.limits.max_request_bytes).await?;
    let mut routed = Vec::new();
    let mut ignored = Vec::new();
    for e in batch.events {
        let body = base64::engine::general_purpose::STANDARD
            .decode(e.body_base64.as_bytes())
            .map_err(|err| DispatchError::InvalidRequest(format!("events[].body_base64: {err}")))?;
        if let Some(tp) = &e.traceparent
            && !rave_service::telemetry::is_traceparent(tp)
        {
            return Err(DispatchError::InvalidRequest(format!(
                "events[].traceparent: {tp:?} is not W3C"
            )));
        }
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let mut event = IncomingEvent {
            task_id: e.task_id,
            source: e.source,
            event_uuid: e.event_uuid,
            event_type: e.event_type,
            received_at: e.received_at,
            trace_id: e.trace_id,
            traceparent: None,
            headers: e.headers,
            body,
        };
        let route = state.router.route(
            event.source.as_str(),
            event.event_type.as_str(),
            parsed.as_ref(),
        );
        match route {
            Some(r) => {
                // The task's own span, a child of the span that stored the event.
                if let Some(parent) = &e.traceparent {
                    let span = tracing::info_span!(
                        "task.create",
                        otel.name = "task.create",
                        task_id = %event.task_id,
                        kind = %r.kind
                    );
                    rave_service::telemetry::set_remote_parent(&span, parent);
                    span.in_scope(|| rave_service::telemetry::record_task_id(&event.task_id));
                    event.traceparent = rave_service::telemetry::traceparent_of(&span);
                }
                routed.push((event, r));
            }
            None => ignored.push(event),
        }
    }
    let received = (routed.len() + ignored.len()) as u64;
    let ignored_sources: Vec<String> = ignored.iter().map(|e| e.source.to_string()).collect();
    let accepted = store::accept_events(&state.pool, state.clock.now(), routed, ignored)
        .await
        .map_err(unavailable)?;
    state.metrics.events_received.inc_by(received);
    if accepted.ignored > 0 {
        for source in ignored_sources {
            state
                .metrics
                .events_ignored
                .get_or_create(&SourceLabel { source })
                .inc();
        }
    }
    for kind in &accepted.created {
        state
            .metrics
            .tasks_created
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }
    state.metrics.superseded.inc_by(accepted.superseded);
    if !accepted.created.is_empty() {
        state.waker.wake();
    }
    Ok(HttpResponse::Ok().json(&accepted))
}
