//! Conditions on a JSON body by JSON pointer (RFC 6901): what routing rules
//! match on, and what operators search stored events by. One form for both,
//! so a search can ask exactly what a rule would.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A JSON-pointer condition on an event body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub pointer: String,
    /// The value must equal this (any JSON value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// The value must equal one of these.
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    /// The pointer must (true) or must not (false) resolve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

impl Condition {
    /// Why the condition cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !valid_pointer(&self.pointer) {
            return Err(format!(
                "{:?} is not a JSON pointer (it must start with '/')",
                self.pointer
            ));
        }
        if self.equals.is_none() && self.one_of.is_none() && self.exists.is_none() {
            return Err(format!(
                "condition on {} needs equals, in or exists",
                self.pointer
            ));
        }
        Ok(())
    }

    /// Whether `body` (the payload parsed as JSON, if it is JSON) meets it.
    /// A body that is not JSON meets no condition.
    pub fn matches(&self, body: Option<&Value>) -> bool {
        let value = body.and_then(|b| b.pointer(&self.pointer));
        self.exists.is_none_or(|e| e == value.is_some())
            && self.equals.as_ref().is_none_or(|want| value == Some(want))
            && self
                .one_of
                .as_ref()
                .is_none_or(|set| value.is_some_and(|v| set.contains(v)))
    }
}

pub fn valid_pointer(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

/// The pointer's reference tokens, unescaped (`~1` is `/`, `~0` is `~`):
/// PostgreSQL's `#>` path for the same place.
pub fn segments(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer[1..]
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// A document that contains `value` at `pointer`, for a containment (`@>`)
/// query that an index can answer; `None` when a token could be an array
/// index (then containment would not say the same as the pointer).
pub fn containing(pointer: &str, value: &Value) -> Option<Value> {
    let mut doc = value.clone();
    for token in segments(pointer).into_iter().rev() {
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut map = serde_json::Map::new();
        map.insert(token, doc);
        doc = Value::Object(map);
    }
    Some(doc)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn segments_unescape_and_containment_nests_object_keys_only() {
        assert_eq!(segments("/a~1b/c~0d"), ["a/b", "c~d"]);
        assert!(segments("").is_empty());
        assert_eq!(
            containing("/repository/full_name", &json!("o/r")),
            Some(json!({"repository": {"full_name": "o/r"}}))
        );
        assert_eq!(containing("/commits/0/id", &json!("x")), None);
    }

    #[test]
    fn conditions_match_as_pointers_resolve() {
        let body = json!({"a": {"b": 1}, "n": null});
        let c = |s: &str| serde_json::from_str::<Condition>(s).unwrap();
        assert!(c(r#"{"pointer": "/a/b", "equals": 1}"#).matches(Some(&body)));
        assert!(c(r#"{"pointer": "/a/b", "in": [2, 1]}"#).matches(Some(&body)));
        assert!(c(r#"{"pointer": "/n", "exists": true}"#).matches(Some(&body)));
        assert!(!c(r#"{"pointer": "/x", "exists": true}"#).matches(Some(&body)));
        assert!(c(r#"{"pointer": "/x", "exists": false}"#).matches(None));
        assert!(!c(r#"{"pointer": "/a/b", "equals": 1}"#).matches(None));
        assert!(c(r#"{"pointer": "/a"}"#).check().is_err());
        assert!(c(r#"{"pointer": "a", "exists": true}"#).check().is_err());
    }
}
