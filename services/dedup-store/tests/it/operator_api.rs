use base64::Engine as _;
use serde_json::Value;

use crate::helpers::{error_code, event, sample, spawn_store};

#[tokio::test]
async fn an_event_can_be_read_back_with_its_exact_body_and_headers() {
    let store = spawn_store().await;
    let body = b"\x00\xffnot utf-8 \r\n";
    store.post_event(&event("github", "read-me", body)).await;

    let response = store.get("/v1/events/github/read-me").await;
    assert_eq!(response.status(), 200);
    let found: Value = response.json().await.unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(found["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, body);
    assert_eq!(found["headers"]["x-github-event"], "push");
    assert_eq!(found["event_type"], "push");
    assert_eq!(found["body_bytes"], body.len());
}

#[tokio::test]
async fn reading_an_unknown_event_is_a_404_with_a_json_body() {
    let store = spawn_store().await;
    let response = store.get("/v1/events/github/nope").await;
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "event_not_found");
    let response = store.get("/no/such/route").await;
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");
}

#[tokio::test]
async fn the_listing_pages_through_events_in_storage_order_and_filters_by_source() {
    let store = spawn_store().await;
    for i in 0..5 {
        store
            .post_event(&event("github", &format!("e{i}"), b"{}"))
            .await;
    }
    store.post_event(&event("gitlab", "other", b"{}")).await;

    let page: Value = store
        .get("/v1/events?source=github&limit=3")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e0", "e1", "e2"]);
    let after = page["next_after"].as_i64().unwrap();
    let page: Value = store
        .get(&format!("/v1/events?source=github&limit=3&after={after}"))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e3", "e4"]);
    assert!(page["next_after"].is_null());

    let all: Value = store.get("/v1/events").await.json().await.unwrap();
    assert_eq!(all["events"].as_array().unwrap().len(), 6);

    let response = store.get("/v1/events?limit=100000").await;
    assert_eq!(response.status(), 400);
    let response = store.get("/v1/events?after=abc").await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn metrics_are_openmetrics_when_asked_and_prometheus_text_otherwise() {
    let store = spawn_store().await;
    store.post_event(&event("github", "m", b"{}")).await;
    let open = test_support::metrics::scrape_openmetrics(&store.http, &store.address).await;
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = open.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"));
    assert!(text.contains("dedup_commit_duration_seconds_bucket"));

    let plain = store.get("/metrics").await;
    assert!(
        plain.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = plain.text().await.unwrap();
    for name in [
        "dedup_events_inserted_total",
        "dedup_events_duplicate_total",
        "dedup_batch_size",
        "dedup_commit_duration_seconds",
        "dedup_pool_connections_in_use",
    ] {
        assert!(
            text.contains(&format!("# HELP {name}")) || text.contains(name),
            "{name} missing"
        );
    }
    assert!(!text.contains("task_id="), "no unbounded labels");
}

#[tokio::test]
async fn without_the_right_token_nothing_is_stored_or_read() {
    let store = spawn_store().await;
    let anyone = reqwest::Client::new();
    let body = event("github", "forged", b"{}");
    let insert = |client: &reqwest::Client, token: Option<&str>| {
        let request = client
            .post(format!("{}/v1/events", store.address))
            .json(&body);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    for token in [
        None,
        Some("guess"),
        Some(test_support::STORE_OPERATOR_TOKEN),
    ] {
        let response = insert(&anyone, token).send().await.unwrap();
        assert_eq!(response.status(), 401, "write with {token:?}");
        assert_eq!(
            response.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert_eq!(
        store.db.scalar("SELECT count(*) FROM events").await,
        0,
        "no \"verified\" event from anyone but ingest"
    );

    assert_eq!(
        store.post_event(&body).await.status(),
        201,
        "ingest's token"
    );
    for path in ["/v1/events", "/v1/events/github/forged"] {
        for token in [None, Some("guess"), Some(test_support::INGEST_TOKEN)] {
            let mut request = anyone.get(format!("{}{path}", store.address));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let status = request.send().await.unwrap().status();
            assert_eq!(status, 401, "read of {path} with {token:?}");
        }
        assert_eq!(store.get(path).await.status(), 200, "an operator's read");
    }
    let refused = sample(
        &store.metrics_text().await,
        "dedup_requests_rejected_total{reason=\"unauthorized\"}",
    );
    assert_eq!(refused, 9.0);
}
