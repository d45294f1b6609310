//! Routing rules: which events become which tasks. The first rule that
//! matches wins; an event no rule matches is recorded as ignored.

use rave_service::ids::TaskKind;
use serde_json::Value;

use rave_service::pointer::valid_pointer;

use crate::settings::{Condition, Policy, RouteSettings};

#[derive(Debug, Clone)]
pub struct Rule {
    source: Option<String>,
    event_types: Vec<String>,
    when: Vec<Condition>,
    kind: TaskKind,
    priority: i16,
    max_attempts: i32,
    entity_key: Vec<String>,
    policy: Policy,
}

/// What a matched rule makes of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub kind: TaskKind,
    pub priority: i16,
    pub max_attempts: i32,
    /// `source:value:value...` from the rule's pointers; `None` when the rule
    /// has none or one of them does not resolve (then no entity policy applies).
    pub entity_key: Option<String>,
    pub policy: Policy,
}

impl Rule {
    pub fn from_settings(s: &RouteSettings) -> Result<Self, String> {
        let kind = TaskKind::parse(s.kind.clone()).map_err(|e| e.to_string())?;
        if s.max_attempts < 1 {
            return Err("max_attempts must be at least 1".into());
        }
        if let Some(bad) = s.entity_key.iter().find(|p| !valid_pointer(p)) {
            return Err(format!(
                "{bad:?} is not a JSON pointer (it must start with '/')"
            ));
        }
        for c in &s.when {
            c.check()?;
        }
        if s.policy != Policy::Queue && s.entity_key.is_empty() {
            return Err(format!("policy {} needs an entity_key", s.policy.as_str()));
        }
        Ok(Self {
            source: s.source.clone(),
            event_types: s.event_types.clone(),
            when: s.when.clone(),
            kind,
            priority: s.priority,
            max_attempts: s.max_attempts,
            entity_key: s.entity_key.clone(),
            policy: s.policy,
        })
    }

    fn matches(&self, source: &str, event_type: &str, body: Option<&Value>) -> bool {
        if self.source.as_deref().is_some_and(|s| s != source) {
            return false;
        }
        if !self.event_types.is_empty() && !self.event_types.iter().any(|t| t == event_type) {
            return false;
        }
        self.when.iter().all(|c| c.matches(body))
    }

    fn entity_key(&self, source: &str, body: Option<&Value>) -> Option<String> {
        if self.entity_key.is_empty() {
            return None;
        }
        let mut key = source.to_owned();
        for pointer in &self.entity_key {
            let value = body?.pointer(pointer)?;
            key.push(':');
            match value {
                Value::String(s) => key.push_str(s),
                other => key.push_str(&other.to_string()),
            }
        }
        // Any value a sender can type lands here: bounded, so NUL and keys
        // past the index's row limit are stored, still equal for equal keys.
        Some(rave_service::content::bounded_key(&key))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Router(Vec<Rule>);

impl Router {
    /// The rules in order; an invalid one is named by its index
    /// (`routes[2]: ...`).
    pub fn from_settings(routes: &[RouteSettings]) -> Result<Self, String> {
        routes
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::from_settings(r).map_err(|e| format!("routes[{i}]: {e}")))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The task for an event, or `None` when it is to be ignored.
    /// `body` is the payload parsed as JSON, if it is JSON.
    pub fn route(&self, source: &str, event_type: &str, body: Option<&Value>) -> Option<Routed> {
        let rule = self
            .0
            .iter()
            .find(|r| r.matches(source, event_type, body))?;
        Some(Routed {
            kind: rule.kind.clone(),
            priority: rule.priority,
            max_attempts: rule.max_attempts,
            entity_key: rule.entity_key(source, body),
            policy: if rule.entity_key(source, body).is_some() {
                rule.policy
            } else {
                Policy::Queue
            },
        })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every kind a rule can produce (bounded metric labels).
    pub fn kinds(&self) -> Vec<TaskKind> {
        let mut kinds: Vec<TaskKind> = self.0.iter().map(|r| r.kind.clone()).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn router(toml_rules: &str) -> Router {
        #[derive(serde::Deserialize)]
        struct Rules {
            routes: Vec<RouteSettings>,
        }
        let rules: Rules = toml::from_str(toml_rules).unwrap();
        Router::from_settings(&rules.routes).unwrap()
    }

    #[test]
    fn the_first_matching_rule_wins_and_unmatched_events_are_ignored() {
        let r = router(
            r#"
            [[routes]]
            source = "gitlab"
            event_types = ["Merge Request Hook"]
            when = [{ pointer = "/object_attributes/action", in = ["open", "update"] }]
            kind = "review"
            priority = 1
            entity_key = ["/project/id", "/object_attributes/iid"]
            policy = "supersede"

            [[routes]]
            source = "gitlab"
            kind = "triage"
            "#,
        );
        let mr =
            json!({"project": {"id": 7}, "object_attributes": {"iid": 42, "action": "update"}});
        let routed = r.route("gitlab", "Merge Request Hook", Some(&mr)).unwrap();
        assert_eq!(routed.kind.as_str(), "review");
        assert_eq!(routed.priority, 1);
        assert_eq!(routed.entity_key.as_deref(), Some("gitlab:7:42"));
        assert_eq!(routed.policy, Policy::Supersede);

        let closed =
            json!({"project": {"id": 7}, "object_attributes": {"iid": 42, "action": "close"}});
        assert_eq!(
            r.route("gitlab", "Merge Request Hook", Some(&closed))
                .unwrap()
                .kind
                .as_str(),
            "triage"
        );
        assert!(r.route("github", "push", Some(&mr)).is_none());
    }

    #[test]
    fn conditions_check_existence_equality_and_non_json_bodies_match_no_condition() {
        let r = router(
            r#"
            [[routes]]
            when = [{ pointer = "/draft", exists = false }, { pointer = "/ref", equals = "refs/heads/main" }]
            kind = "build"
            "#,
        );
        assert!(
            r.route("x", "push", Some(&json!({"ref": "refs/heads/main"})))
                .is_some()
        );
        assert!(
            r.route(
                "x",
                "push",
                Some(&json!({"ref": "refs/heads/main", "draft": true}))
            )
            .is_none()
        );
        assert!(
            r.route("x", "push", Some(&json!({"ref": "refs/heads/dev"})))
                .is_none()
        );
        assert!(r.route("x", "push", None).is_none());
    }

    #[test]
    fn an_entity_key_that_does_not_resolve_falls_back_to_the_queue_policy() {
        let r = router(
            r#"
            [[routes]]
            kind = "review"
            entity_key = ["/pull_request/number"]
            policy = "serialize"
            "#,
        );
        let routed = r
            .route("github", "push", Some(&json!({"ref": "x"})))
            .unwrap();
        assert_eq!((routed.entity_key, routed.policy), (None, Policy::Queue));
    }

    #[test]
    fn invalid_rules_are_refused_with_a_reason() {
        let bad = |rules: &str| {
            #[derive(serde::Deserialize)]
            struct Rules {
                routes: Vec<RouteSettings>,
            }
            let rules: Rules = toml::from_str(rules).unwrap();
            Router::from_settings(&rules.routes).unwrap_err()
        };
        assert!(bad("[[routes]]\nkind = \"Review\"").contains("task kind"));
        assert!(bad("[[routes]]\nkind = \"r\"\npolicy = \"serialize\"").contains("entity_key"));
        assert!(bad("[[routes]]\nkind = \"r\"\nentity_key = [\"id\"]").contains("JSON pointer"));
        assert!(bad("[[routes]]\nkind = \"r\"\nwhen = [{ pointer = \"/a\" }]").contains("equals"));
    }
}
