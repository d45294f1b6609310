//! Values headed for PostgreSQL, checked where they enter.
//!
//! A correctly signed webhook or an authenticated agent can still carry
//! values PostgreSQL refuses: NUL in `text` and in `jsonb` strings or keys
//! (`\u0000`), and keys past a btree index's row limit. Rust strings cannot
//! hold unpaired surrogates (serde_json refuses `"\ud800"`), so NUL and
//! length are what is left to check. What is checked here is refused or
//! bounded before any statement sees it, so one bad value cannot fail the
//! statement that carries the good ones.

use serde_json::Value;

/// A value PostgreSQL would refuse: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Unstorable {
    pub field: String,
    pub reason: String,
}

fn unstorable(field: &str, reason: impl Into<String>) -> Unstorable {
    Unstorable {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Text for a `text` column: no NUL, at most `max_bytes`.
pub fn check_text(field: &str, value: &str, max_bytes: usize) -> Result<(), Unstorable> {
    if value.contains('\0') {
        return Err(unstorable(
            field,
            "contains NUL (\\u0000), which PostgreSQL text cannot hold",
        ));
    }
    if value.len() > max_bytes {
        return Err(unstorable(
            field,
            format!("is {} bytes; at most {max_bytes}", value.len()),
        ));
    }
    Ok(())
}

/// JSON for a `jsonb` column: no NUL in any string or key. (Depth and
/// number range are bounded by serde_json's parser already: 128 levels,
/// finite numbers.)
pub fn check_json(field: &str, value: &Value) -> Result<(), Unstorable> {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => {
                return Err(unstorable(
                    field,
                    "a string contains NUL (\\u0000), which PostgreSQL jsonb cannot hold",
                ));
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return Err(unstorable(
                        field,
                        "a key contains NUL (\\u0000), which PostgreSQL jsonb cannot hold",
                    ));
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    Ok(())
}

/// A body's copy for a `jsonb` column, when it is JSON `jsonb` can hold:
/// serde_json's own rendering of it, so PostgreSQL parses only what
/// serde_json wrote (no escape it could refuse), checked for NUL. `None`
/// for anything else, which is then never a reason to refuse the body.
pub fn searchable_copy(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    check_json("body", &value).ok()?;
    serde_json::to_string(&value).ok()
}

/// Keys longer than this (in bytes) are stored in their bounded form.
pub const MAX_KEY_BYTES: usize = 512;
/// What a bounded key keeps of the original, for people reading it.
const KEY_PREFIX_BYTES: usize = 128;
/// Separates a bounded key's prefix from its digest. A control character,
/// so no key stored as it is can equal a bounded one (those with control
/// characters are bounded too).
const DIGEST_MARK: &str = "\u{1}sha256:";

/// A key (an entity key, say) in a form every index and `text` column
/// takes, that compares equal exactly when the keys are equal. A key of at
/// most [`MAX_KEY_BYTES`] with no control character is itself; any other
/// becomes its first bytes (control characters shown as U+FFFD) followed by
/// the SHA-256 of the whole key. Never refused.
pub fn bounded_key(raw: &str) -> String {
    if raw.len() <= MAX_KEY_BYTES && !raw.chars().any(char::is_control) {
        return raw.to_owned();
    }
    let mut end = KEY_PREFIX_BYTES.min(raw.len());
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    let prefix: String = raw[..end]
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    format!("{prefix}{DIGEST_MARK}{}", hex::encode(digest.as_ref()))
}

/// Text that may have come from anywhere (an error message, a reason),
/// made storable and short: NUL shown as U+FFFD, cut at `max_bytes` on a
/// character boundary.
pub fn storable_text(text: &str, max_bytes: usize) -> String {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace('\0', "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nul_anywhere_in_json_is_found_by_its_field() {
        let nested = serde_json::json!({"a": [1, {"b": "x\u{0}y"}]});
        assert_eq!(check_json("result", &nested).unwrap_err().field, "result");
        let key = serde_json::json!({"k\u{0}": 1});
        assert!(check_json("result", &key).is_err());
        assert!(check_json("result", &serde_json::json!({"ok": ["fine", 1.5, null]})).is_ok());
    }

    #[test]
    fn a_searchable_copy_exists_only_for_json_jsonb_can_hold() {
        assert_eq!(
            searchable_copy(br#"{ "a" : [1, "\u00e9"] }"#).as_deref(),
            Some(r#"{"a":[1,"é"]}"#)
        );
        for refused in [
            &br#"{"a":"\u0000"}"#[..],
            br#"{"\u0000":1}"#,
            br#"{"a":"\ud800"}"#,
            br#"{"a":1e999}"#,
            b"\xff{}",
            b"not json",
            b"",
        ] {
            assert_eq!(
                searchable_copy(refused),
                None,
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    proptest! {
        /// Whatever the bytes, a copy (when there is one) is JSON with no NUL.
        #[test]
        fn any_searchable_copy_is_json_without_nul(body in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Some(copy) = searchable_copy(&body) {
                let value: Value = serde_json::from_str(&copy).unwrap();
                prop_assert!(check_json("copy", &value).is_ok());
            }
        }
    }

    #[test]
    fn text_with_nul_or_past_its_limit_is_refused_and_plain_text_is_not() {
        assert!(check_text("error", "a\0b", 100).is_err());
        assert!(check_text("error", &"x".repeat(101), 100).is_err());
        assert!(check_text("error", "boom: exit 1", 100).is_ok());
    }

    #[test]
    fn a_short_plain_key_is_itself() {
        assert_eq!(bounded_key("github:42"), "github:42");
    }

    #[test]
    fn a_long_or_nul_key_is_bounded_and_marked() {
        let long = format!("github:{}", "é".repeat(5000));
        let b = bounded_key(&long);
        assert!(
            b.len() <= KEY_PREFIX_BYTES + DIGEST_MARK.len() + 64,
            "{}",
            b.len()
        );
        assert!(b.starts_with("github:é"));
        let nul = bounded_key("github:a\0b");
        assert!(!nul.contains('\0') && nul.contains(DIGEST_MARK), "{nul:?}");
        assert_eq!(storable_text("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(storable_text("ééé", 3), "é");
    }

    proptest! {
        #[test]
        fn bounded_keys_are_storable_and_equal_exactly_when_the_keys_are(
            a in "(?s).{0,700}", b in "(?s).{0,700}",
        ) {
            let (ba, bb) = (bounded_key(&a), bounded_key(&b));
            prop_assert!(!ba.contains('\0'));
            prop_assert!(ba.len() <= MAX_KEY_BYTES);
            prop_assert_eq!(ba == bb, a == b);
            prop_assert_eq!(bounded_key(&a), ba);
        }
    }
}
