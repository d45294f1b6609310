//! The internal hand-off: dedup-store's relay posts batches of stored
//! events; each becomes a task or an ignore record.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use rave_service::ids::{EventType, EventUuid, SourceName, TaskId, TaskKind, TraceId};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{AppState, Reply, counted, json_body, unavailable};
use crate::auth::bearer;
use crate::error::DispatchError;
use crate::metrics::{KindLabel, SourceLabel};
use crate::store::{self, IncomingEvent, Intake};

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
    /// Only from an operator's replay, never from the relay.
    #[serde(default)]
    pub replay: Option<crate::replay::ReplayOf>,
}

/// A relay batch. Each event is read on its own: one the dispatcher cannot
/// read is quarantined, never a reason to refuse the batch (which the relay
/// would send again forever).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayBatch {
    events: Vec<serde_json::Value>,
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
        Some(token) if state.live.current().relays.allows(token) => {}
        _ => return Err(DispatchError::Unauthorized),
    }
    let batch: RelayBatch = json_body(req, payload, state.limits.max_request_bytes).await?;
    let received = batch.events.len() as u64;
    let (accepted, set_aside) = take_in(state, batch.events).await?;
    let quarantined = store::quarantine(&state.pool, state.clock.now(), &set_aside)
        .await
        .map_err(unavailable)?;
    state.metrics.events_received.inc_by(received);
    count_quarantined(state, &set_aside);
    let mut answer =
        serde_json::to_value(&accepted).map_err(|e| DispatchError::Unexpected(e.into()))?;
    answer["quarantined"] = set_aside.len().into();
    tracing::debug!(new_quarantine_records = quarantined, "hand-off accepted");
    Ok(HttpResponse::Ok().json(answer))
}

/// Reads, checks and routes each relayed event, then commits every event
/// that can be stored; returns what could not, for quarantine. Shared by the
/// hand-off and the operators' retry.
pub(super) async fn take_in(
    state: &AppState,
    events: Vec<serde_json::Value>,
) -> Result<(store::Accepted, Vec<store::Quarantined>), DispatchError> {
    let mut items = Vec::new();
    // Each event as it came, by the index of its item: what a quarantine
    // record keeps.
    let mut raws = Vec::new();
    let mut set_aside = Vec::new();
    // One batch, one routing configuration.
    let live = state.live.current();
    for raw in events {
        match prepare(&live.router, &raw) {
            Ok(item) => {
                items.push(item);
                raws.push(raw);
            }
            Err(q) => set_aside.push(*q),
        }
    }
    let ignored_sources: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Intake::Ignored(e) => Some(e.source.to_string()),
            Intake::Routed(..) => None,
        })
        .collect();
    let (accepted, refused) =
        store::accept_isolated(&state.pool, state.waker.origin(), state.clock.now(), &items)
            .await
            .map_err(unavailable)?;
    if accepted.ignored > 0 {
        for source in ignored_sources {
            state
                .metrics
                .events_ignored
                .get_or_create(&SourceLabel { source })
                .inc();
        }
    }
    for (n, error) in refused {
        let (e, raw) = (items[n].event(), &raws[n]);
        tracing::warn!(task_id = %e.task_id, error = %format!("{error:#}"), "event quarantined: PostgreSQL refused it");
        set_aside.push(store::Quarantined {
            task_id: Some(e.task_id.to_string()),
            source: Some(e.source.to_string()),
            event_uuid: Some(e.event_uuid.to_string()),
            event_type: Some(e.event_type.to_string()),
            reason: format!("PostgreSQL refused it: {error:#}"),
            event: serde_json::to_vec(raw).unwrap_or_default(),
        });
    }
    count_accepted(state, &accepted);
    Ok((accepted, set_aside))
}

fn count_accepted(state: &AppState, accepted: &store::Accepted) {
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
        let work = store::per_kind(accepted.created.iter().map(TaskKind::as_str));
        state.waker.wake_for(&work);
    }
}

pub(super) fn count_quarantined(state: &AppState, set_aside: &[store::Quarantined]) {
    for q in set_aside {
        state
            .metrics
            .events_quarantined
            .get_or_create(&SourceLabel {
                source: q.source.clone().unwrap_or_else(|| "unknown".to_owned()),
            })
            .inc();
    }
}

/// One relayed event read, checked and routed; or why it is set aside.
fn prepare(
    router: &crate::routing::Router,
    raw: &serde_json::Value,
) -> Result<Intake, Box<store::Quarantined>> {
    let aside = |reason: String| {
        // Only what parses as its id type is kept in a column; the rest is
        // in the event's bytes.
        let field = |name: &str, valid: fn(&str) -> bool| {
            raw.get(name)
                .and_then(|v| v.as_str())
                .filter(|v| valid(v))
                .map(str::to_owned)
        };
        tracing::warn!(%reason, "event quarantined");
        Box::new(store::Quarantined {
            task_id: field("task_id", |v| TaskId::parse(v).is_ok()),
            source: field("source", |v| SourceName::parse(v).is_ok()),
            event_uuid: field("event_uuid", |v| EventUuid::parse(v).is_ok()),
            event_type: field("event_type", |v| EventType::parse(v).is_ok()),
            reason,
            event: serde_json::to_vec(raw).unwrap_or_default(),
        })
    };
    let e: RelayedEvent =
        RelayedEvent::deserialize(raw).map_err(|err| aside(format!("unreadable event: {err}")))?;
    let body = base64::engine::general_purpose::STANDARD
        .decode(e.body_base64.as_bytes())
        .map_err(|err| aside(format!("body_base64: {err}")))?;
    rave_service::content::check_json("headers", &serde_json::Value::Object(e.headers.clone()))
        .map_err(|err| aside(err.to_string()))?;
    // A traceparent that is not W3C loses the task its parent span, nothing more.
    let traceparent = e
        .traceparent
        .filter(|tp| rave_service::telemetry::is_traceparent(tp));
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
        replay: e.replay,
    };
    let route = router.route(
        event.source.as_str(),
        event.event_type.as_str(),
        parsed.as_ref(),
    );
    Ok(match route {
        Some(r) => {
            if let Some(replay) = &event.replay {
                // A replayed task's own trace (one per task), linked to the
                // span that stored the event: the original stays its own.
                let span = tracing::info_span!(
                    parent: None,
                    "task.replay",
                    otel.name = "task.replay",
                    task_id = %event.task_id,
                    kind = %r.kind,
                    replay_of = %replay.original_task_id,
                    replay_request = %replay.request_id
                );
                if let Some(original) = &traceparent {
                    rave_service::telemetry::link_span_to(&span, original);
                }
                span.in_scope(|| rave_service::telemetry::record_task_id(&event.task_id));
                event.traceparent = rave_service::telemetry::traceparent_of(&span);
                event.trace_id = None;
            } else if let Some(parent) = &traceparent {
                // The task's own span, a child of the span that stored the event.
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
            Intake::Routed(event, r)
        }
        None => Intake::Ignored(event),
    })
}
