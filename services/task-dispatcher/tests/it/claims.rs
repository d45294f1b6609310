use std::collections::HashSet;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::{drain_as, event, sample, spawn_dispatcher, spawn_dispatcher_with};

#[tokio::test]
async fn a_claim_returns_the_payload_a_fresh_lease_and_the_webhooks_trace() {
    let d = spawn_dispatcher().await;
    let e = event("github", "push", json!({"ref": "refs/heads/main"}));
    d.handoff(std::slice::from_ref(&e)).await;
    let tasks = d.claim_now("agent-1", 5).await;
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(t["task_id"], e["task_id"]);
    assert_eq!(t["kind"], "build");
    assert_eq!(t["attempt"], 1);
    assert_eq!(t["lease_token"].as_str().unwrap().len(), 32);
    assert_eq!(t["event"]["payload"]["ref"], "refs/heads/main");
    assert_eq!(t["event"]["event_type"], "push");
    let traceparent = t["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{}-", e["trace_id"].as_str().unwrap())),
        "{traceparent}"
    );
    assert!(
        d.claim_now("agent-2", 5).await.is_empty(),
        "a leased task is not claimed again"
    );
}

#[tokio::test]
async fn claims_are_ordered_by_priority_then_run_at() {
    let d = spawn_dispatcher().await;
    let normal = event("github", "push", json!({}));
    let urgent = event("github", "urgent", json!({}));
    d.handoff(&[normal.clone(), urgent.clone()]).await;
    let tasks = d.claim_now("agent-1", 2).await;
    let ids: Vec<&Value> = tasks.iter().map(|t| &t["task_id"]).collect();
    assert_eq!(ids, [&urgent["task_id"], &normal["task_id"]]);
}

#[tokio::test]
async fn agents_only_get_their_kinds_and_need_a_known_token() {
    let d = spawn_dispatcher().await;
    d.handoff(&[event(
        "gitlab",
        "Merge Request Hook",
        json!({"project": {"id": 1}, "object_attributes": {"iid": 1}}),
    )])
    .await;
    assert!(
        d.claim_now("builder", 10).await.is_empty(),
        "builder handles build only"
    );
    let (status, body) = d
        .claim("builder", json!({"kinds": ["review"], "wait_secs": 0}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = d.claim("nobody", json!({"wait_secs": 0})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = d
        .claim("agent-1", json!({"max_tasks": 0, "wait_secs": 0}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = d.claim("agent-1", json!({"wait_secs": 3600})).await;
    assert_eq!(status, 400);
    assert_eq!(d.claim_now("agent-1", 10).await.len(), 1);
}

#[tokio::test]
async fn a_waiting_claim_is_woken_by_new_work_without_polling() {
    let d = spawn_dispatcher().await;
    let waiting = d.parked_claim("agent-3", 20).await;
    let id = d.push_task().await;
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["tasks"][0]["task_id"], id.as_str());
}

#[tokio::test]
async fn twenty_concurrent_agents_complete_two_thousand_tasks_each_exactly_once() {
    let d = spawn_dispatcher().await;
    for _ in 0..10 {
        let batch: Vec<Value> = (0..200)
            .map(|i| event("github", "push", json!({"n": i})))
            .collect();
        d.handoff(&batch).await;
    }
    let mut agents = JoinSet::new();
    for i in 0..20 {
        let (http, url) = (d.http.clone(), d.url.clone());
        agents.spawn(drain_as(http, format!("agent-{i}"), url.clone(), url));
    }
    let mut claimed = Vec::new();
    while let Some(result) = agents.join_next().await {
        claimed.extend(result.unwrap());
    }
    let distinct: HashSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len(), 2000, "every task claimed once, none twice");
    assert_eq!(distinct.len(), 2000);

    let db = d.db.connect().await.unwrap();
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FROM tasks",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2000, 2000));
    let attempts: i64 = db
        .query_one(
            "SELECT count(*) FROM task_attempts WHERE outcome = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attempts, 2000,
        "one attempt per task: no task had two leases"
    );
    let metrics = d.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "dispatcher_completions_total{kind=\"build\",outcome=\"succeeded\"}"
        ),
        2000.0
    );
    assert_eq!(
        sample(&metrics, "dispatcher_completion_batch_size_sum"),
        2000.0
    );
}

#[tokio::test]
async fn task_duration_carries_the_webhooks_trace_id_as_an_exemplar() {
    let d = spawn_dispatcher().await;
    let e = event("github", "push", json!({}));
    d.handoff(std::slice::from_ref(&e)).await;
    let task = d.claim_now("agent-1", 1).await.remove(0);
    d.advance(3);
    d.lease_call("agent-1", &task, "complete", json!({})).await;
    let open = test_support::metrics::scrape_openmetrics(&d.http, &d.url)
        .await
        .text()
        .await
        .unwrap();
    let exemplar = format!("# {{trace_id=\"{}\"}}", e["trace_id"].as_str().unwrap());
    assert!(
        open.lines()
            .any(|l| l.starts_with("task_duration_seconds_bucket") && l.contains(&exemplar)),
        "no exemplar {exemplar} in:\n{open}"
    );
}

#[tokio::test]
async fn a_stop_answers_parked_claims_at_once_instead_of_waiting_out_their_long_poll() {
    let d = spawn_dispatcher().await;
    // Parked for up to a minute; the stop allows a second.
    let parked = d.parked_claim("agent-1", 60).await;
    d.handle.stop(true).await;
    let (status, body) = parked.await.unwrap();
    assert_eq!(status, 204, "answered, not cut off: {body}");
    d.stopped.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_claims_answer_holds_whole_tasks_up_to_its_byte_bound_and_always_one() {
    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .unwrap();
    // About 1.3 MiB per task as base64: three fit in 4 MiB, not four.
    let d = spawn_dispatcher_with(db, |s| s.claim.max_response_bytes = 4 << 20).await;
    let big = "x".repeat(1 << 20);
    let events: Vec<Value> = (0..6)
        .map(|i| event("github", "push", json!({"n": i, "padding": big})))
        .collect();
    d.handoff(&events).await;
    let first = d.claim_now("agent-1", 10).await;
    assert_eq!(first.len(), 3, "three whole tasks within 4 MiB");
    let rest = d.claim_now("agent-2", 10).await;
    assert_eq!(rest.len(), 3, "the others stayed queued, unleased");

    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .unwrap();
    let tiny = spawn_dispatcher_with(db, |s| s.claim.max_response_bytes = 1).await;
    tiny.handoff(&events[..2]).await;
    assert_eq!(
        tiny.claim_now("agent-1", 10).await.len(),
        1,
        "a task larger than the bound still goes, alone"
    );
}

#[tokio::test]
async fn agents_are_limited_each_by_their_own_token_not_by_the_address_they_share() {
    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .unwrap();
    let d = spawn_dispatcher_with(db, |s| {
        s.limits.agent_requests = rave_service::limit::RateSettings {
            per_second: 1,
            burst: 2,
        };
    })
    .await;
    let claim = |agent: &'static str| {
        d.http
            .post(format!("{}/v1/agents/claim", d.url))
            .bearer_auth(crate::helpers::agent_token(agent))
            .json(&json!({"wait_secs": 0}))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(claim("agent-1").await.unwrap().status(), 204);
    }
    let limited = claim("agent-1").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Same machine, same address, another agent: its own budget.
    assert_eq!(claim("agent-2").await.unwrap().status(), 204);
}

#[tokio::test]
async fn new_work_wakes_only_as_many_waiting_claims_as_it_can_feed() {
    let d = spawn_dispatcher().await;
    let mut waiting: Vec<_> = ["agent-1", "agent-2", "agent-3"]
        .into_iter()
        .map(|agent| {
            let request = d
                .http
                .post(format!("{}/v1/agents/claim", d.url))
                .bearer_auth(crate::helpers::agent_token(agent))
                .json(&json!({"wait_secs": 30}));
            tokio::spawn(crate::helpers::send(request))
        })
        .collect();
    while sample(&d.metrics().await, "dispatcher_agents_waiting") < 3.0 {
        tokio::task::yield_now().await;
    }
    for round in 1..=2 {
        let task_id = d.push_task().await;
        let (answered, _, rest) = futures_util::future::select_all(waiting).await;
        let (status, body) = answered.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["tasks"][0]["task_id"], task_id.as_str());
        waiting = rest;
        let metrics = d.metrics().await;
        assert_eq!(
            sample(&metrics, "dispatcher_claim_wakeups_total"),
            f64::from(round),
            "one task woke one claim; the others slept on"
        );
        assert_eq!(
            sample(&metrics, "dispatcher_agents_waiting"),
            f64::from(3 - round)
        );
    }
    for claim in waiting {
        claim.abort();
    }
}
