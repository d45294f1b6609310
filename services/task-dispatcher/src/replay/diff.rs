//! What-if routing: the live rules and proposed ones run side by side over
//! the same stored events; every difference is counted by what changed and
//! from what to what, with a few examples each. Nothing is written.

use std::collections::BTreeMap;

use serde::Serialize;

use super::client::FoundEvent;
use super::{RoutedView, parsed_body};
use crate::routing::Router;

/// Groups of changes kept at most: past it, changes are still counted in
/// `changed` but in no group (bounded answers however wild the rules).
const MAX_GROUPS: usize = 200;

/// One event an example points at.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub source: String,
    pub event_uuid: String,
    pub event_type: String,
    pub task_id: String,
}

/// Events whose `change` went `from` → `to`.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// `kind`, `priority`, `max_attempts`, `entity_key`, `policy`,
    /// `starts_ignored`, `stops_ignored`.
    pub change: &'static str,
    /// The live rules' value (`ignored` for no task); for `entity_key`, not
    /// grouped by value: see the examples.
    pub from: Option<String>,
    pub to: Option<String>,
    pub count: u64,
    pub examples: Vec<Example>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Events read.
    pub scanned: u64,
    /// Of those, events the proposed rules route differently.
    pub changed: u64,
    pub groups: Vec<Group>,
    /// More events matched than one evaluation reads: continue after
    /// `next_after`.
    pub truncated: bool,
    pub next_after: Option<i64>,
}

/// What changed, from what, to what: a group's key.
type Change = (&'static str, Option<String>, Option<String>);

/// Accumulates a report page by page.
#[derive(Debug)]
pub struct Diff<'a> {
    live: &'a Router,
    proposed: &'a Router,
    examples: usize,
    scanned: u64,
    changed: u64,
    groups: BTreeMap<Change, (u64, Vec<Example>)>,
}

impl<'a> Diff<'a> {
    pub fn new(live: &'a Router, proposed: &'a Router, examples: usize) -> Self {
        Self {
            live,
            proposed,
            examples,
            scanned: 0,
            changed: 0,
            groups: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, event: &FoundEvent) {
        self.scanned += 1;
        let body = parsed_body(event);
        let route = |r: &Router| {
            r.route(&event.source, &event.event_type, body.as_ref())
                .as_ref()
                .map(RoutedView::from)
        };
        let (before, after) = (route(self.live), route(self.proposed));
        let mut changes: Vec<Change> = Vec::new();
        match (&before, &after) {
            (Some(b), None) => changes.push(("starts_ignored", Some(b.kind.clone()), None)),
            (None, Some(a)) => changes.push(("stops_ignored", None, Some(a.kind.clone()))),
            (None, None) => {}
            (Some(b), Some(a)) => {
                let mut differs = |field: &'static str, from: String, to: String| {
                    if from != to {
                        changes.push((field, Some(from), Some(to)));
                    }
                };
                differs("kind", b.kind.clone(), a.kind.clone());
                differs("priority", b.priority.to_string(), a.priority.to_string());
                differs(
                    "max_attempts",
                    b.max_attempts.to_string(),
                    a.max_attempts.to_string(),
                );
                differs("policy", b.policy.to_owned(), a.policy.to_owned());
                if b.entity_key != a.entity_key {
                    changes.push(("entity_key", None, None));
                }
            }
        }
        if changes.is_empty() {
            return;
        }
        self.changed += 1;
        for key in changes {
            if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
                continue;
            }
            let (count, examples) = self.groups.entry(key).or_default();
            *count += 1;
            if examples.len() < self.examples {
                examples.push(Example {
                    source: event.source.clone(),
                    event_uuid: event.event_uuid.clone(),
                    event_type: event.event_type.clone(),
                    task_id: event.task_id.clone(),
                });
            }
        }
    }

    pub fn report(self, next_after: Option<i64>) -> Report {
        let mut groups: Vec<Group> = self
            .groups
            .into_iter()
            .map(|((change, from, to), (count, examples))| Group {
                change,
                from: from.or_else(|| (change == "stops_ignored").then(|| "ignored".into())),
                to: to.or_else(|| (change == "starts_ignored").then(|| "ignored".into())),
                count,
                examples,
            })
            .collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.change.cmp(b.change)));
        Report {
            scanned: self.scanned,
            changed: self.changed,
            groups,
            truncated: next_after.is_some(),
            next_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use serde_json::json;

    use super::*;
    use crate::settings::RouteSettings;

    fn router(rules: &str) -> Router {
        #[derive(serde::Deserialize)]
        struct Rules {
            routes: Vec<RouteSettings>,
        }
        Router::from_settings(&toml::from_str::<Rules>(rules).unwrap().routes).unwrap()
    }

    fn found(id: &str, event_type: &str, body: serde_json::Value) -> FoundEvent {
        FoundEvent {
            id: 1,
            source: "github".into(),
            event_uuid: id.into(),
            event_type: event_type.into(),
            task_id: "0123456789abcdef".into(),
            received_at: "2026-12-01T00:00:00Z".into(),
            traceparent: None,
            headers: None,
            body_base64: Some(base64::engine::general_purpose::STANDARD.encode(body.to_string())),
        }
    }

    #[test]
    fn a_diff_counts_each_change_by_field_and_ignores_what_stays_the_same() {
        let live = router(
            r#"
            [[routes]]
            event_types = ["pull_request"]
            kind = "review"
            [[routes]]
            event_types = ["push"]
            kind = "build"
            "#,
        );
        let proposed = router(
            r#"
            [[routes]]
            event_types = ["pull_request"]
            when = [{ pointer = "/draft", equals = true }]
            kind = "triage"
            priority = 9
            [[routes]]
            event_types = ["pull_request"]
            kind = "review"
            [[routes]]
            event_types = ["issues"]
            kind = "triage"
            "#,
        );
        let mut diff = Diff::new(&live, &proposed, 1);
        diff.add(&found("draft-1", "pull_request", json!({"draft": true})));
        diff.add(&found("draft-2", "pull_request", json!({"draft": true})));
        diff.add(&found("ready", "pull_request", json!({"draft": false})));
        diff.add(&found("push", "push", json!({})));
        diff.add(&found("issue", "issues", json!({})));
        let report = diff.report(None);
        assert_eq!((report.scanned, report.changed), (5, 4));
        let group = |change: &str| {
            report
                .groups
                .iter()
                .find(|g| g.change == change)
                .unwrap_or_else(|| panic!("no {change} group"))
        };
        let kind = group("kind");
        assert_eq!(
            (kind.from.as_deref(), kind.to.as_deref(), kind.count),
            (Some("review"), Some("triage"), 2)
        );
        assert_eq!(kind.examples.len(), 1);
        assert_eq!(group("priority").count, 2);
        let starts = group("starts_ignored");
        assert_eq!(
            (
                starts.from.as_deref(),
                starts.to.as_deref(),
                starts.examples[0].event_uuid.as_str()
            ),
            (Some("build"), Some("ignored"), "push")
        );
        let stops = group("stops_ignored");
        assert_eq!(
            (stops.from.as_deref(), stops.to.as_deref(), stops.count),
            (Some("ignored"), Some("triage"), 1)
        );
        assert!(!report.truncated);
    }
}
