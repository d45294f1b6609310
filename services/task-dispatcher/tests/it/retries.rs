use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{sample, spawn_dispatcher};

fn at(value: &serde_json::Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

#[tokio::test]
async fn failures_back_off_exponentially_with_jitter_then_the_task_is_dead_and_can_be_retried() {
    let d = spawn_dispatcher().await;
    let id = d.push_task().await; // build: max 3 attempts; base 10 s, jitter 10 %
    for (attempt, base) in [(1, 10.0), (2, 20.0)] {
        let task = d.claim_now("agent-1", 1).await.remove(0);
        assert_eq!(task["attempt"], attempt);
        let now = d.clock_now();
        let (status, outcome) = d
            .lease_call("agent-1", &task, "fail", json!({"error": "flaky"}))
            .await;
        assert_eq!(
            (status, outcome["state"].as_str()),
            (200, Some("queued")),
            "{outcome}"
        );
        let wait = (at(&outcome["retry_at"]) - now).as_seconds_f64();
        assert!(
            (base * 0.9..=base * 1.1).contains(&wait),
            "attempt {attempt}: waits {wait} s"
        );
        assert!(
            d.claim_now("agent-1", 1).await.is_empty(),
            "not before its retry time"
        );
        d.advance(base as u64 * 2);
    }
    let task = d.claim_now("agent-1", 1).await.remove(0);
    assert_eq!(task["attempt"], 3);
    let (_, outcome) = d
        .lease_call("agent-1", &task, "fail", json!({"error": "flaky"}))
        .await;
    assert_eq!(outcome["state"], "dead");
    assert!(outcome["retry_at"].is_null());
    // The agent repeats its call: the same answer, nothing changes.
    let (status, again) = d
        .lease_call("agent-1", &task, "fail", json!({"error": "flaky"}))
        .await;
    assert_eq!((status, again["state"].as_str()), (200, Some("dead")));

    let metrics = d.metrics().await;
    assert_eq!(
        sample(&metrics, "dispatcher_dead_letters_total{kind=\"build\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "dispatcher_completions_total{kind=\"build\",outcome=\"retried\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(&metrics, "dispatcher_tasks{kind=\"build\",state=\"dead\"}"),
        1.0
    );

    let (status, _) = d.operator_post(&format!("/v1/tasks/{id}/retry")).await;
    assert_eq!(status, 200);
    let task = d.claim_now("agent-2", 1).await.remove(0);
    assert_eq!(
        task["attempt"], 1,
        "a retried dead letter gets fresh attempts"
    );
    let history = d.task(&id).await["attempts"].clone();
    let runs: Vec<(i64, i64)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["run"].as_i64().unwrap(), a["attempt"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        runs,
        [(1, 1), (1, 2), (1, 3), (2, 1)],
        "the history keeps every run"
    );
    let (status, body) = d.operator_post(&format!("/v1/tasks/{id}/retry")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "only dead or failed tasks"
    );
}

#[tokio::test]
async fn a_failure_that_is_not_retryable_fails_the_task_at_once() {
    let d = spawn_dispatcher().await;
    let id = d.push_task().await;
    let task = d.claim_now("agent-1", 1).await.remove(0);
    let (status, outcome) = d
        .lease_call(
            "agent-1",
            &task,
            "fail",
            json!({"error": "bad input", "retryable": false}),
        )
        .await;
    assert_eq!((status, outcome["state"].as_str()), (200, Some("failed")));
    let body = d.task(&id).await;
    assert_eq!(body["error"], "bad input");
    assert_eq!(body["attempts"][0]["outcome"], "failed");
}

#[tokio::test]
async fn malformed_agent_calls_are_refused_with_400() {
    let d = spawn_dispatcher().await;
    d.push_task().await;
    let task = d.claim_now("agent-1", 1).await.remove(0);
    let mut bad = task.clone();
    bad["lease_token"] = json!("short");
    let (status, body) = d.lease_call("agent-1", &bad, "complete", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _) = d.lease_call("agent-1", &task, "fail", json!({})).await;
    assert_eq!(status, 400, "fail needs an error message");
    let (status, _) = d
        .lease_call("agent-1", &task, "complete", json!({"surprise": 1}))
        .await;
    assert_eq!(status, 400);
    let mut unknown = task.clone();
    unknown["task_id"] = json!("0000000000000000");
    let (status, body) = d
        .lease_call("agent-1", &unknown, "heartbeat", json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("task_not_found"))
    );
    let metrics = d.metrics().await;
    assert!(
        sample(
            &metrics,
            "dispatcher_requests_rejected_total{reason=\"invalid_request\"}"
        ) >= 3.0
    );
}
