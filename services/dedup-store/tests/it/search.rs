//! `POST /v1/events/search` against real PostgreSQL (ADR 19).

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::{TestStore, error_code, event, sample, spawn_store};

impl TestStore {
    pub async fn search(&self, request: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/events/search", self.address))
            .bearer_auth(test_support::STORE_OPERATOR_TOKEN)
            .json(request)
            .send()
            .await
            .expect("request sent")
    }

    async fn found(&self, request: Value) -> Vec<String> {
        let response = self.search(&request).await;
        assert_eq!(response.status(), 200, "{request}");
        let page: Value = response.json().await.unwrap();
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_uuid"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn delivery(source: &str, id: &str, kind: &str, at: &str, body: &Value) -> Value {
    let mut e = event(source, id, body.to_string().as_bytes());
    e["event_type"] = kind.into();
    e["received_at"] = at.into();
    e
}

#[tokio::test]
async fn a_search_filters_by_source_type_delivery_id_time_and_body_pointers() {
    let store = spawn_store().await;
    let events = [
        (
            "github",
            "g1",
            "push",
            "2026-11-27T10:00:00Z",
            json!({"ref": "refs/heads/main", "repository": {"full_name": "o/a"}}),
        ),
        (
            "github",
            "g2",
            "pull_request",
            "2026-11-27T11:00:00Z",
            json!({"action": "opened", "draft": true, "repository": {"full_name": "o/a"}}),
        ),
        (
            "github",
            "g3",
            "pull_request",
            "2026-11-27T12:00:00Z",
            json!({"action": "closed", "repository": {"full_name": "o/b"}, "commits": [{"id": "c1"}]}),
        ),
        (
            "gitlab",
            "l1",
            "push",
            "2026-11-27T12:30:00Z",
            json!({"ref": "refs/heads/main", "project": {"id": 7}}),
        ),
    ];
    for (source, id, kind, at, body) in &events {
        assert_eq!(
            store
                .post_event(&delivery(source, id, kind, at, body))
                .await
                .status(),
            201
        );
    }
    // Not JSON at all: found by every filter but the body's.
    store
        .post_event(&delivery(
            "github",
            "raw",
            "push",
            "2026-11-27T13:00:00Z",
            &json!(0),
        ))
        .await;
    let mut raw = event("github", "bytes", b"\xff\x00 not json");
    raw["received_at"] = "2026-11-27T13:00:00Z".into();
    store.post_event(&raw).await;

    assert_eq!(store.found(json!({"source": "gitlab"})).await, ["l1"]);
    assert_eq!(
        store.found(json!({"event_types": ["pull_request"]})).await,
        ["g2", "g3"]
    );
    assert_eq!(
        store
            .found(json!({"event_uuids": ["g3", "l1", "nope"]}))
            .await,
        ["g3", "l1"]
    );
    assert_eq!(
        store
            .found(json!({"since": "2026-11-27T11:00:00Z", "until": "2026-11-27T12:30:00Z"}))
            .await,
        ["g2", "g3"]
    );
    let pointer = |c: Value| json!({"where": [c]});
    assert_eq!(
        store
            .found(pointer(
                json!({"pointer": "/repository/full_name", "equals": "o/a"})
            ))
            .await,
        ["g1", "g2"]
    );
    assert_eq!(
        store
            .found(pointer(
                json!({"pointer": "/action", "in": ["closed", "reopened"]})
            ))
            .await,
        ["g3"]
    );
    assert_eq!(
        store
            .found(pointer(json!({"pointer": "/commits/0/id", "equals": "c1"})))
            .await,
        ["g3"]
    );
    assert_eq!(
        store
            .found(pointer(json!({"pointer": "/project/id", "equals": 7})))
            .await,
        ["l1"]
    );
    // A whole object as the value: the containment index narrows, `#>`
    // decides equality (a superset is not equal).
    assert_eq!(
        store
            .found(pointer(json!({"pointer": "/project", "equals": {}})))
            .await,
        Vec::<String>::new()
    );
    assert_eq!(
        store
            .found(pointer(json!({"pointer": "/draft", "exists": true})))
            .await,
        ["g2"]
    );
    // Nothing is at any pointer of a body that is not JSON (as in routing).
    assert_eq!(
        store
            .found(json!({"source": "github", "where": [{"pointer": "/draft", "exists": false}]}))
            .await,
        ["g1", "g3", "raw", "bytes"]
    );
    assert_eq!(
        store
            .found(json!({"source": "github", "event_types": ["pull_request"],
                          "where": [{"pointer": "/repository/full_name", "equals": "o/a"}]}))
            .await,
        ["g2"]
    );
}

#[tokio::test]
async fn search_pages_are_stable_while_new_events_arrive() {
    let store = spawn_store().await;
    for i in 0..5 {
        store
            .post_event(&event("github", &format!("e{i}"), b"{\"n\":1}"))
            .await;
    }
    let page: Value = store
        .search(&json!({"source": "github", "limit": 3}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
    let after = page["next_after"].as_i64().unwrap();
    // Intake between two pages lands after them, never inside one.
    store
        .post_event(&event("github", "late", b"{\"n\":1}"))
        .await;
    let rest = store
        .found(json!({"source": "github", "after": after, "limit": 3}))
        .await;
    assert_eq!(rest, ["e3", "e4", "late"]);
    let last: Value = store
        .search(&json!({"source": "github", "after": after, "limit": 4}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last["next_after"], Value::Null);
}

#[tokio::test]
async fn bodies_come_back_byte_exact_and_a_page_stops_at_its_byte_bound() {
    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .unwrap();
    let mut settings = crate::helpers::settings_for(&db).await;
    settings.limits.max_search_response_bytes = 3000;
    let store = crate::helpers::spawn_with(db, settings).await;
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
    for i in 0..3 {
        store
            .post_event(&event("github", &format!("b{i}"), body.as_bytes()))
            .await;
    }
    let page: Value = store
        .search(&json!({"include_bodies": true}))
        .await
        .json()
        .await
        .unwrap();
    let events = page["events"].as_array().unwrap();
    // 1,000-odd bytes are ~1,360 in base64, plus room for headers: one fits.
    assert_eq!(events.len(), 1, "{page}");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(events[0]["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, body.as_bytes());
    assert_eq!(events[0]["headers"]["x-github-event"], "push");
    let after = page["next_after"].as_i64().expect("more to come");
    let next = store
        .found(json!({"include_bodies": true, "after": after, "limit": 10}))
        .await;
    assert_eq!(next, ["b1"]);
}

#[tokio::test]
async fn a_bad_search_is_a_400_naming_the_field_and_counted() {
    let store = spawn_store().await;
    for (request, field) in [
        (json!({"limit": 0}), "limit"),
        (json!({"where": [{"pointer": "repository"}]}), "where[0]"),
        (json!({"where": [{"pointer": "/a"}]}), "where[0]"),
        (
            json!({"since": "2026-11-28T00:00:00Z", "until": "2026-11-27T00:00:00Z"}),
            "since",
        ),
        (json!({"source": "Not A Source"}), "source"),
        (json!({"colour": "blue"}), "colour"),
        (
            json!({"task_ids": vec!["0123456789abcdef"; 1001]}),
            "task_ids",
        ),
    ] {
        let response = store.search(&request).await;
        assert_eq!(response.status(), 400, "{request}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message} should name {field}");
    }
    let anonymous = reqwest::Client::new()
        .post(format!("{}/v1/events/search", store.address))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(error_code(anonymous).await, "unauthorized");
    let metrics = store.metrics_text().await;
    assert_eq!(
        sample(
            &metrics,
            "dedup_requests_rejected_total{reason=\"invalid_request\"}"
        ),
        7.0
    );
}

#[tokio::test]
async fn a_json_body_postgresql_jsonb_would_refuse_is_stored_without_its_searchable_copy() {
    let store = spawn_store().await;
    // A NUL escape: valid JSON, refused by jsonb.
    let response = store
        .post_event(&event("github", "nul", br#"{"a":"\u0000","b":1}"#))
        .await;
    assert_eq!(response.status(), 201);
    store
        .post_event(&event("github", "ok", br#"{"b":1}"#))
        .await;
    assert_eq!(
        store
            .found(json!({"where": [{"pointer": "/b", "equals": 1}]}))
            .await,
        ["ok"]
    );
    assert_eq!(store.found(json!({"event_uuids": ["nul"]})).await, ["nul"]);
}
