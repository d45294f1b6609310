use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tokio::task::JoinSet;

use crate::helpers::{error_code, event, sample, spawn_store};

#[tokio::test]
async fn a_new_event_is_created_and_its_repeat_gets_the_same_task_id() {
    let store = spawn_store().await;
    let first = store
        .post_event(&event("github", "d-1", b"{\"a\":1}"))
        .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    let task_id = first["task_id"].as_str().unwrap().to_owned();
    assert_eq!(task_id.len(), 16);

    let again = store
        .post_event(&event("github", "d-1", b"{\"a\":1}"))
        .await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["task_id"], task_id.as_str());
}

#[tokio::test]
async fn the_same_delivery_id_from_two_sources_is_two_events() {
    let store = spawn_store().await;
    let a = store.post_event(&event("github", "same", b"x")).await;
    let b = store.post_event(&event("gitlab", "same", b"x")).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (201, 201));
}

#[tokio::test]
async fn an_acknowledged_event_is_readable_from_a_fresh_connection_with_its_outbox_row() {
    let store = spawn_store().await;
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let response = store.post_event(&event("github", "durable-1", &body)).await;
    assert_eq!(response.status(), 201);
    let task_id = response.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let fresh = store.db.connect().await.unwrap();
    let row = fresh
        .query_one(
            "SELECT e.task_id, e.body, e.event_type, o.task_id FROM events e JOIN outbox o ON o.event_id = e.id
             WHERE e.source = 'github' AND e.event_uuid = 'durable-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), task_id);
    assert_eq!(
        row.get::<_, Vec<u8>>(1),
        body,
        "the body is stored byte-exact"
    );
    assert_eq!(row.get::<_, String>(2), "push");
    assert_eq!(row.get::<_, String>(3), task_id);
}

#[tokio::test]
async fn a_thousand_concurrent_inserts_of_a_hundred_deliveries_store_each_exactly_once() {
    let store = spawn_store().await;
    let mut requests = JoinSet::new();
    for i in 0..1000 {
        let http = store.http.clone();
        let url = format!("{}/v1/events", store.address);
        let body = event(
            "github",
            &format!("delivery-{}", i % 100),
            format!("payload {}", i % 100).as_bytes(),
        );
        requests.spawn(async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap();
            (
                i % 100,
                status,
                answer["task_id"].as_str().unwrap().to_owned(),
            )
        });
    }
    let mut created = 0;
    let mut duplicates = 0;
    let mut task_of: HashMap<usize, HashSet<String>> = HashMap::new();
    while let Some(result) = requests.join_next().await {
        let (delivery, status, task_id) = result.unwrap();
        match status {
            201 => created += 1,
            200 => duplicates += 1,
            other => panic!("unexpected status {other}"),
        }
        task_of.entry(delivery).or_default().insert(task_id);
    }
    assert_eq!((created, duplicates), (100, 900));
    assert!(
        task_of.values().all(|ids| ids.len() == 1),
        "every answer for a delivery names one task"
    );

    let db = store.db.connect().await.unwrap();
    let events: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let outbox: i64 = db
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((events, outbox), (100, 100));

    let metrics = store.metrics_text().await;
    assert_eq!(sample(&metrics, "dedup_events_inserted_total"), 100.0);
    assert_eq!(sample(&metrics, "dedup_events_duplicate_total"), 900.0);
    assert!(sample(&metrics, "dedup_batch_size_count") >= 1.0);
}

#[tokio::test]
async fn malformed_requests_are_refused_with_400_counted_and_store_nothing() {
    let store = spawn_store().await;
    let mut bad_source = event("GitHub!", "d", b"x");
    let mut bad_base64 = event("github", "d", b"x");
    bad_base64["body_base64"] = Value::from("***");
    let mut unknown_field = event("github", "d", b"x");
    unknown_field["surprise"] = Value::from(1);
    let mut bad_header = event("github", "d", b"x");
    bad_header["headers"] = serde_json::json!({"X-Upper": "v"});
    let mut bad_uuid = event("github", "with space", b"x");
    bad_source["event_type"] = Value::from("push");
    bad_uuid["event_type"] = Value::from("push");

    for body in [bad_source, bad_base64, unknown_field, bad_header, bad_uuid] {
        let response = store.post_event(&body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(error_code(response).await, "invalid_request");
    }
    let response = store.post_raw("{not json").await;
    assert_eq!(response.status(), 400);

    let metrics = store.metrics_text().await;
    assert_eq!(
        sample(
            &metrics,
            "dedup_requests_rejected_total{reason=\"invalid_request\"}"
        ),
        6.0
    );
    let db = store.db.connect().await.unwrap();
    let events: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 0);
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_refused_with_413() {
    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .unwrap();
    let mut settings = crate::helpers::settings_for(&db).await;
    settings.limits.max_request_bytes = 1024;
    let store = crate::helpers::spawn_with(db, settings).await;
    let response = store
        .post_event(&event("github", "big", &[b'x'; 2048]))
        .await;
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "body_too_large");
}

#[tokio::test]
async fn a_header_postgresql_cannot_store_is_refused_with_400_and_the_events_beside_it_are_stored()
{
    let store = spawn_store().await;
    let mut bad = event("github", "nul-header", b"{}");
    bad["headers"] = serde_json::json!({"user-agent": "a\u{0}b"});
    let good: Vec<Value> = (0..20)
        .map(|i| event("github", &format!("beside-{i}"), b"{}"))
        .collect();
    // Sent together, so they share group commits.
    let mut sends = JoinSet::new();
    for e in good.into_iter().chain([bad]) {
        let (http, url) = (store.http.clone(), format!("{}/v1/events", store.address));
        sends.spawn(async move {
            let answer = http.post(url).json(&e).send().await.unwrap();
            (
                e["event_uuid"].as_str().unwrap().to_owned(),
                answer.status().as_u16(),
                answer.json::<Value>().await.unwrap(),
            )
        });
    }
    while let Some(sent) = sends.join_next().await {
        let (uuid, status, body) = sent.unwrap();
        if uuid == "nul-header" {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("unstorable_value")),
                "{body}"
            );
        } else {
            assert_eq!(status, 201, "{uuid}: {body}");
        }
    }
    let client = store.db.connect().await.unwrap();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 20);
}
