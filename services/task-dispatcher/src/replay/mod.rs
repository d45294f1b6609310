//! Replays and what-if routing over stored events (ADR 19). dedup-store
//! holds the events; the rules, tasks and their records are here, so the
//! dispatcher pages through dedup-store's search ([`client`]) and routes
//! each event itself: with the live rules to replay it ([`plan`]), or with
//! live and proposed rules side by side ([`diff`]).

pub mod client;
pub mod diff;

use base64::Engine as _;
use rave_service::ids::TaskId;
use serde::{Deserialize, Serialize};

use crate::routing::{Routed, Router};
use client::FoundEvent;

/// An operator's name for one replay: the key of its idempotency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReplayId(String);

impl ReplayId {
    pub fn parse(value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        let mut bytes = value.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if first_ok && rest_ok && value.len() <= 128 {
            Ok(Self(value))
        } else {
            Err(format!(
                "request_id: 1 to 128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit; got {value:?}"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReplayId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(value)
    }
}

impl From<ReplayId> for String {
    fn from(id: ReplayId) -> Self {
        id.0
    }
}

impl std::fmt::Display for ReplayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What links a replayed task to the event it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayOf {
    pub request_id: ReplayId,
    pub original_task_id: TaskId,
}

/// The task id a replay gives an event: derived, so the same request for
/// the same event always names the same task (and creates it once), while
/// another request names another one.
pub fn replay_task_id(request: &ReplayId, original: &TaskId) -> TaskId {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("rave-replay\0{request}\0{original}").as_bytes(),
    );
    TaskId::parse(hex::encode(&digest.as_ref()[..8])).expect("16 hex digits")
}

/// A found event's body, parsed as JSON if it is JSON (as routing sees it).
pub fn parsed_body(event: &FoundEvent) -> Option<serde_json::Value> {
    let body = base64::engine::general_purpose::STANDARD
        .decode(event.body_base64.as_deref()?)
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// What the live rules make of one event in a replay.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub original_task_id: String,
    pub task_id: String,
    pub source: String,
    pub event_uuid: String,
    pub event_type: String,
    /// `task` or `ignored`.
    pub outcome: &'static str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub routed: Option<RoutedView>,
}

/// A routing decision as operators read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutedView {
    pub kind: String,
    pub priority: i16,
    pub max_attempts: i32,
    pub entity_key: Option<String>,
    pub policy: &'static str,
}

impl From<&Routed> for RoutedView {
    fn from(r: &Routed) -> Self {
        Self {
            kind: r.kind.to_string(),
            priority: r.priority,
            max_attempts: r.max_attempts,
            entity_key: r.entity_key.clone(),
            policy: r.policy.as_str(),
        }
    }
}

/// Routes `event` as a replay would, without writing anything.
pub fn plan(router: &Router, request: &ReplayId, event: &FoundEvent) -> Option<Planned> {
    let original = TaskId::parse(event.task_id.clone()).ok()?;
    let body = parsed_body(event);
    let routed = router.route(&event.source, &event.event_type, body.as_ref());
    Some(Planned {
        task_id: replay_task_id(request, &original).to_string(),
        original_task_id: original.to_string(),
        source: event.source.clone(),
        event_uuid: event.event_uuid.clone(),
        event_type: event.event_type.clone(),
        outcome: if routed.is_some() { "task" } else { "ignored" },
        routed: routed.as_ref().map(RoutedView::from),
    })
}

/// The event as the relay would hand it over, under its replay task id and
/// with its link: what `take_in` reads.
pub fn relayed(request: &ReplayId, event: &FoundEvent) -> serde_json::Value {
    let original = TaskId::parse(event.task_id.clone());
    let task_id = original
        .as_ref()
        .map(|o| replay_task_id(request, o).to_string())
        // Not a task id: set aside by `take_in` as unreadable.
        .unwrap_or_else(|_| event.task_id.clone());
    serde_json::json!({
        "task_id": task_id,
        "source": event.source,
        "event_uuid": event.event_uuid,
        "event_type": event.event_type,
        "received_at": event.received_at,
        "trace_id": null,
        "traceparent": event.traceparent,
        "headers": event.headers.clone().unwrap_or_else(|| serde_json::json!({})),
        "body_base64": event.body_base64.clone().unwrap_or_default(),
        "replay": {"request_id": request, "original_task_id": event.task_id},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_task_id_is_the_same_for_the_same_request_and_new_for_another() {
        let original = TaskId::parse("0123456789abcdef").unwrap();
        let a = ReplayId::parse("fix-42").unwrap();
        let b = ReplayId::parse("fix-43").unwrap();
        assert_eq!(replay_task_id(&a, &original), replay_task_id(&a, &original));
        assert_ne!(replay_task_id(&a, &original), replay_task_id(&b, &original));
        assert_ne!(replay_task_id(&a, &original), original);
    }

    #[test]
    fn request_ids_are_short_plain_names() {
        assert!(ReplayId::parse("2026-12-02.fix:rules_1").is_ok());
        for bad in ["", "-x", "a b", "ü", &"x".repeat(129)] {
            assert!(ReplayId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
