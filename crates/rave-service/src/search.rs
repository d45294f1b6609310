//! The search of stored events: what operators and task-dispatcher's
//! replays send dedup-store's `POST /v1/events/search` (ADR 19). One type on
//! both sides of the call.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{EventType, EventUuid, SourceName, TaskId};
use crate::pointer::Condition;

/// The search, as operators (and task-dispatcher's replays) send it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<EventType>,
    /// Delivery ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_uuids: Vec<EventUuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_ids: Vec<TaskId>,
    /// Received at or after.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<OffsetDateTime>,
    /// Received before.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<OffsetDateTime>,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Events after this id (the previous page's `next_after`).
    #[serde(default)]
    pub after: i64,
    pub limit: Option<i64>,
    /// Headers, raw body (base64) and traceparent with each event.
    #[serde(default)]
    pub include_bodies: bool,
}
