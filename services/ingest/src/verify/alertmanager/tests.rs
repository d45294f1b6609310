use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::*;

const TOKEN: &str = "am-bearer-token-0123456789";

fn headers(authorization: Option<&str>) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Some(value) = authorization {
        map.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn tokens() -> Vec<Secret> {
    vec![Secret::new("the-previous-token"), Secret::new(TOKEN)]
}

fn alert(fingerprint: &str, status: &str, starts: &str, ends: &str) -> Value {
    json!({
        "status": status,
        "labels": { "alertname": "RaveStoreDown", "severity": "critical", "instance": fingerprint },
        "annotations": { "summary": "dedup-store is down" },
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": fingerprint,
    })
}

/// A notification as Alertmanager 0.25 sends it (version 4).
fn notification(status: &str, alerts: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "4",
        "groupKey": "{}/{severity=\"critical\"}:{alertname=\"RaveStoreDown\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rave",
        "groupLabels": { "alertname": "RaveStoreDown" },
        "commonLabels": { "alertname": "RaveStoreDown" },
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }))
    .unwrap()
}

const ZERO: &str = "0001-01-01T00:00:00Z";

fn firing() -> Vec<u8> {
    notification(
        "firing",
        vec![
            alert("a1", "firing", "2026-12-01T10:00:00.123456789Z", ZERO),
            alert("b2", "firing", "2026-12-01T10:00:05Z", ZERO),
        ],
    )
}

fn check(authorization: Option<&str>, body: &[u8]) -> Result<Verified, VerifyError> {
    verify(&tokens(), &headers(authorization), body)
}

#[test]
fn a_notification_with_a_configured_bearer_token_is_an_alert_event() {
    let bearer = format!("Bearer {TOKEN}");
    let verified = check(Some(&bearer), &firing()).unwrap();
    assert_eq!(verified.event_type.as_str(), "alert.firing");
    let id = verified.event_uuid.as_str();
    assert!(id.starts_with("am-") && id.len() == 67, "{id}");
    // Either token of a rotation is accepted.
    assert!(check(Some("Bearer the-previous-token"), &firing()).is_ok());
}

#[test]
fn a_resend_of_the_same_state_has_the_same_id_whatever_its_order_and_spelling() {
    let bearer = format!("Bearer {TOKEN}");
    let first = check(Some(&bearer), &firing()).unwrap().event_uuid;
    // Alerts in another order, an instant spelled with an offset, and a
    // repeat_interval resend that changed nothing else.
    let again = notification(
        "firing",
        vec![
            alert("b2", "firing", "2026-12-01T11:00:05+01:00", ZERO),
            alert("a1", "firing", "2026-12-01T10:00:00.123456789Z", ZERO),
        ],
    );
    assert_eq!(check(Some(&bearer), &again).unwrap().event_uuid, first);
    // Prometheus refreshes a firing alert's endsAt (how long its last send
    // is valid) on every evaluation; Alertmanager's retries carry the new one.
    let refreshed = notification(
        "firing",
        vec![
            alert(
                "a1",
                "firing",
                "2026-12-01T10:00:00.123456789Z",
                "2026-12-01T10:04:00Z",
            ),
            alert(
                "b2",
                "firing",
                "2026-12-01T10:00:05Z",
                "2026-12-01T10:04:00Z",
            ),
        ],
    );
    assert_eq!(check(Some(&bearer), &refreshed).unwrap().event_uuid, first);
}

#[test]
fn an_alert_joining_firing_again_or_resolving_is_a_new_event() {
    let bearer = format!("Bearer {TOKEN}");
    let id = |body: Vec<u8>| check(Some(&bearer), &body).unwrap();
    let first = id(firing()).event_uuid;
    let joined = id(notification(
        "firing",
        vec![
            alert("a1", "firing", "2026-12-01T10:00:00.123456789Z", ZERO),
            alert("b2", "firing", "2026-12-01T10:00:05Z", ZERO),
            alert("c3", "firing", "2026-12-01T10:02:00Z", ZERO),
        ],
    ));
    assert_ne!(joined.event_uuid, first);
    let refired = id(notification(
        "firing",
        vec![
            alert("a1", "firing", "2026-12-01T12:00:00Z", ZERO),
            alert("b2", "firing", "2026-12-01T10:00:05Z", ZERO),
        ],
    ));
    assert_ne!(refired.event_uuid, first);
    let resolved = id(notification(
        "resolved",
        vec![
            alert(
                "a1",
                "resolved",
                "2026-12-01T10:00:00.123456789Z",
                "2026-12-01T10:30:00Z",
            ),
            alert(
                "b2",
                "resolved",
                "2026-12-01T10:00:05Z",
                "2026-12-01T10:30:00Z",
            ),
        ],
    ));
    assert_ne!(resolved.event_uuid, first);
    assert_eq!(resolved.event_type.as_str(), "alert.resolved");
}

#[test]
fn a_missing_wrong_or_non_bearer_token_is_refused_before_the_body_is_read() {
    // A body that is not JSON: authentication comes first, so the error is
    // about the token, never the body.
    let junk = b"not json";
    assert_eq!(
        check(None, junk).unwrap_err(),
        VerifyError::MissingHeader("authorization".into())
    );
    assert_eq!(
        check(Some("Bearer not-the-token"), junk).unwrap_err(),
        VerifyError::InvalidToken
    );
    assert_eq!(
        check(Some(&format!("Bearer {TOKEN}x")), junk).unwrap_err(),
        VerifyError::InvalidToken
    );
    assert!(matches!(
        check(Some(&format!("Basic {TOKEN}")), junk).unwrap_err(),
        VerifyError::MalformedHeader { header, .. } if header == "authorization"
    ));
}

#[test]
fn an_authenticated_body_alertmanager_would_not_send_is_a_client_error() {
    let bearer = format!("Bearer {TOKEN}");
    for (body, reason) in [
        (b"not json".to_vec(), "not an Alertmanager notification"),
        (notification("firing", vec![]), "no alerts"),
        (
            notification("firing", vec![alert("a1", "firing", "yesterday", ZERO)]),
            "startsAt is not an RFC 3339 time",
        ),
        (
            notification("pending", vec![]),
            "not an Alertmanager notification",
        ),
    ] {
        let err = check(Some(&bearer), &body).unwrap_err();
        assert!(err.is_malformed(), "{err}");
        assert_eq!(err.code(), "malformed_body");
        assert!(err.to_string().contains(reason), "{err}");
    }
}
