//! `POST /v1/events/batch`: ingest's many events per call.

use serde_json::{Value, json};

use crate::helpers::{error_code, event, sample, settings_for, spawn_store, spawn_with};

impl crate::helpers::TestStore {
    async fn post_batch(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/events/batch", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    async fn stored_uuids(&self) -> Vec<String> {
        let client = self.db.connect().await.unwrap();
        client
            .query("SELECT event_uuid FROM events ORDER BY event_uuid", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

fn item(event: Value) -> Value {
    json!({ "event": event })
}

#[tokio::test]
async fn each_event_of_a_batch_is_answered_in_order_as_its_own_insert_would_be() {
    let store = spawn_store().await;
    let before = store.post_event(&event("github", "old", b"{}")).await;
    let old_task: Value = before.json().await.unwrap();

    let mut nul_header = event("github", "nul-header", b"{}");
    nul_header["headers"] = json!({"user-agent": "a\u{0}b"});
    let mut bad_base64 = event("github", "bad-base64", b"{}");
    bad_base64["body_base64"] = json!("not base64!");
    let batch = json!({ "events": [
        item(event("github", "new-1", b"{\"n\":1}")),
        item(nul_header),
        item(event("github", "old", b"{}")),
        json!(42),
        item(bad_base64),
        { "event": event("github", "new-2", b"{}"), "traceparent": "not-a-traceparent" },
        item(event("gitlab", "new-1", b"{}")),
    ]});
    let response = store.post_batch(&batch).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let results = answer["results"].as_array().expect("results");
    let statuses: Vec<(u64, Option<&str>)> = results
        .iter()
        .map(|r| (r["status"].as_u64().unwrap(), r["error"]["code"].as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            (201, None),
            (400, Some("unstorable_value")),
            (200, None),
            (400, Some("invalid_request")),
            (400, Some("invalid_request")),
            (400, Some("invalid_request")),
            (201, None),
        ],
        "{answer}"
    );
    assert_eq!(results[2]["task_id"], old_task["task_id"]);
    assert_eq!(results[2]["duplicate"], true);
    assert_ne!(results[0]["task_id"], results[6]["task_id"]);
    // Only the storable events are stored, each once.
    assert_eq!(store.stored_uuids().await, ["new-1", "new-1", "old"]);
    let metrics = store.metrics_text().await;
    assert_eq!(
        sample(
            &metrics,
            "dedup_requests_rejected_total{reason=\"invalid_request\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &metrics,
            "dedup_requests_rejected_total{reason=\"unstorable_value\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_batched_event_is_stored_in_the_trace_its_item_names() {
    let store = spawn_store().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let batch = json!({ "events": [
        { "traceparent": format!("00-{trace}-00f067aa0ba902b7-01"), "event": event("github", "traced", b"{}") },
        item(event("github", "untraced", b"{}")),
    ]});
    let response = store.post_batch(&batch).await;
    assert_eq!(response.status(), 200);
    let client = store.db.connect().await.unwrap();
    let rows = client
        .query(
            "SELECT event_uuid, trace_id, traceparent FROM events ORDER BY event_uuid",
            &[],
        )
        .await
        .unwrap();
    let (uuid, trace_id, traceparent): (String, Option<String>, Option<String>) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!(uuid, "traced");
    assert_eq!(trace_id.as_deref(), Some(trace));
    // The stored traceparent is the store's own span in that trace, which
    // the task continues.
    let traceparent = traceparent.expect("a traceparent");
    assert!(
        traceparent.starts_with(&format!("00-{trace}-")),
        "{traceparent}"
    );
    assert!(!traceparent.contains("00f067aa0ba902b7"), "{traceparent}");
    let other_trace: Option<String> = rows[1].get(1);
    assert_ne!(other_trace.as_deref(), Some(trace));
}

#[tokio::test]
async fn a_batch_over_its_limits_or_without_ingests_token_is_refused_whole_and_stores_nothing() {
    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .expect("test database");
    let mut settings = settings_for(&db).await;
    settings.limits.max_events_per_call = 2;
    settings.limits.max_batch_request_bytes = 4096;
    let store = spawn_with(db, settings).await;
    let three = json!({ "events": (0..3).map(|i| item(event("github", &format!("e-{i}"), b"{}"))).collect::<Vec<_>>() });
    let response = store.post_batch(&three).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "invalid_request");

    let large = json!({ "events": [item(event("github", "large", &[b'x'; 4096]))] });
    let response = store.post_batch(&large).await;
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "body_too_large");

    let two = json!({ "events": (0..2).map(|i| item(event("github", &format!("e-{i}"), b"{}"))).collect::<Vec<_>>() });
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events/batch", store.address))
        .json(&two)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(response).await, "unauthorized");

    assert!(store.stored_uuids().await.is_empty());
    let response = store.post_batch(&two).await;
    assert_eq!(response.status(), 200);
    assert_eq!(store.stored_uuids().await, ["e-0", "e-1"]);
}
