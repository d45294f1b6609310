//! The `alertmanager` source: Alertmanager's webhook receiver, so alerts
//! become events (and tasks) like any other delivery.

use serde_json::json;

use crate::helpers::{ALERTMANAGER_TOKEN, send, spawn_stack};

fn notification(status: &str, ends_at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"RaveOutboxStale\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rave",
        "groupLabels": { "alertname": "RaveOutboxStale" },
        "commonLabels": { "alertname": "RaveOutboxStale", "severity": "critical" },
        "commonAnnotations": { "summary": "Stored events wait to become tasks." },
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status,
            "labels": { "alertname": "RaveOutboxStale", "severity": "critical" },
            "annotations": {},
            "startsAt": "2026-12-01T10:00:00.5Z",
            "endsAt": ends_at,
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": "c0ffee0123456789",
        }],
    }))
    .unwrap()
}

#[tokio::test]
async fn an_alertmanager_notification_is_stored_once_however_often_alertmanager_resends_it() {
    let stack = spawn_stack().await;
    let body = notification("firing", "0001-01-01T00:00:00Z");
    let (status, receipt) = send(stack.alertmanager(ALERTMANAGER_TOKEN, &body)).await;
    assert_eq!(status, 202, "{receipt}");
    let delivery = receipt["delivery_id"].as_str().unwrap().to_owned();
    assert!(delivery.starts_with("am-"), "{delivery}");
    // repeat_interval and retries send the same notification again.
    for _ in 0..3 {
        let (status, again) = send(stack.alertmanager(ALERTMANAGER_TOKEN, &body)).await;
        assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")));
        assert_eq!(again["task_id"], receipt["task_id"]);
    }
    assert_eq!(stack.stored_count().await, 1);
    let db = stack.db.connect().await.unwrap();
    let row = db
        .query_one(
            "SELECT event_type, headers::text, body FROM events WHERE source = 'alertmanager'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "alert.firing");
    let headers: String = row.get(1);
    assert!(
        !headers.to_lowercase().contains("authorization"),
        "{headers}"
    );
    assert!(!headers.contains(ALERTMANAGER_TOKEN), "{headers}");
    assert_eq!(
        row.get::<_, Vec<u8>>(2),
        body,
        "the payload is kept byte-exact"
    );
}

#[tokio::test]
async fn the_resolution_of_an_alert_is_an_event_of_its_own() {
    let stack = spawn_stack().await;
    let firing = notification("firing", "0001-01-01T00:00:00Z");
    let resolved = notification("resolved", "2026-12-01T10:05:00Z");
    let (status, first) = send(stack.alertmanager(ALERTMANAGER_TOKEN, &firing)).await;
    assert_eq!(status, 202, "{first}");
    let (status, second) = send(stack.alertmanager(ALERTMANAGER_TOKEN, &resolved)).await;
    assert_eq!(status, 202, "{second}");
    assert_ne!(first["task_id"], second["task_id"]);
    let db = stack.db.connect().await.unwrap();
    let types: Vec<String> = db
        .query("SELECT event_type FROM events ORDER BY event_type", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, ["alert.firing", "alert.resolved"]);
}

#[tokio::test]
async fn a_notification_without_the_token_is_refused_counted_and_stores_nothing() {
    let stack = spawn_stack().await;
    let body = notification("firing", "0001-01-01T00:00:00Z");
    let (status, error) = send(stack.alertmanager("not-the-token", &body)).await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["error"]["code"], "invalid_token", "{error}");
    let (status, error) = send(
        stack
            .http
            .post(format!("{}/hooks/alertmanager", stack.ingest))
            .body(body.clone()),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("missing_header"))
    );
    // Authenticated but not a notification: a client error, not stored.
    let (status, error) = send(stack.alertmanager(ALERTMANAGER_TOKEN, b"{\"groupKey\": 1}")).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("malformed_body"))
    );
    assert_eq!(stack.stored_count().await, 0);
    let metrics = stack.metrics().await;
    for reason in ["invalid_token", "missing_header", "malformed_body"] {
        let line = format!("webhook_errors_total{{source=\"alertmanager\",reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
}
