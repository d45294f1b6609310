use serde_json::json;

use crate::helpers::{RELAY, event, sample, send, spawn_dispatcher};

#[tokio::test]
async fn routed_events_become_tasks_unmatched_ones_are_ignored_and_redelivery_creates_nothing_twice()
 {
    let d = spawn_dispatcher().await;
    let events = vec![
        event("github", "push", json!({"ref": "refs/heads/main"})),
        event(
            "gitlab",
            "Merge Request Hook",
            json!({"project": {"id": 1}, "object_attributes": {"iid": 2}}),
        ),
        event("github", "star", json!({"action": "created"})),
    ];
    let first = d.handoff(&events).await;
    assert_eq!(
        (
            first["created_count"].as_u64(),
            first["ignored"].as_u64(),
            first["duplicates"].as_u64()
        ),
        (Some(2), Some(1), Some(0))
    );

    // The relay delivers the same batch again (its ack was lost).
    let again = d.handoff(&events).await;
    assert_eq!(
        (
            again["created_count"].as_u64(),
            again["ignored"].as_u64(),
            again["duplicates"].as_u64()
        ),
        (Some(0), Some(0), Some(3))
    );

    let (_, listing) = d.operator_get("/v1/tasks").await;
    let tasks = listing["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    let push = tasks.iter().find(|t| t["kind"] == "build").unwrap();
    assert_eq!(push["state"], "queued");
    assert_eq!(
        push["task_id"], events[0]["task_id"],
        "the task keeps the event's task_id"
    );
    let review = tasks.iter().find(|t| t["kind"] == "review").unwrap();
    assert_eq!(review["entity_key"], "gitlab:1:2");
    assert_eq!(review["policy"], "supersede");

    let (_, ignored) = d.operator_get("/v1/ignored-events").await;
    assert_eq!(ignored["events"].as_array().unwrap().len(), 1);
    assert_eq!(ignored["events"][0]["event_type"], "star");

    let metrics = d.metrics().await;
    assert_eq!(
        sample(&metrics, "dispatcher_tasks_created_total{kind=\"build\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "dispatcher_events_ignored_total{source=\"github\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "dispatcher_tasks{kind=\"build\",state=\"queued\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn the_hand_off_needs_the_relay_token_and_a_batch_of_events() {
    let d = spawn_dispatcher().await;
    let url = format!("{}/v1/internal/events", d.url);
    let body = json!({"events": [event("github", "push", json!({}))]});
    let (status, answer) = send(d.http.post(&url).json(&body)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = send(d.http.post(&url).bearer_auth("agent-token").json(&body)).await;
    assert_eq!(status, 401);
    // Not a batch at all: refused. (An unreadable event inside a batch is
    // quarantined instead: tests/it/quarantine.rs.)
    let (status, answer) = send(
        d.http
            .post(&url)
            .bearer_auth(RELAY)
            .json(&json!({"evts": []})),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (_, listing) = d.operator_get("/v1/tasks").await;
    assert!(listing["tasks"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn operator_routes_need_the_operator_token() {
    let d = spawn_dispatcher().await;
    let (status, _) = send(d.http.get(format!("{}/v1/tasks", d.url))).await;
    assert_eq!(status, 401);
    let (status, _) = send(
        d.http
            .get(format!("{}/v1/tasks", d.url))
            .bearer_auth(crate::helpers::agent_token("agent-1")),
    )
    .await;
    assert_eq!(status, 401, "agents are not operators");
    let (status, body) = d.operator_get("/v1/tasks?state=bogus").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = d.operator_get("/v1/tasks/0123456789abcdef").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("task_not_found"))
    );
}
