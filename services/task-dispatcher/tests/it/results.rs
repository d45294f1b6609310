//! Many tasks ended in one call: `/v1/agents/results`, and the `finished`
//! list of a claim. Each item is answered as its own call would be.

use serde_json::{Value, json};

use crate::helpers::{TestDispatcher, agent_token, send, spawn_dispatcher, spawn_dispatcher_with};

impl TestDispatcher {
    async fn results(&self, agent: &str, items: Value) -> (u16, Value) {
        send(
            self.http
                .post(format!("{}/v1/agents/results", self.url))
                .bearer_auth(agent_token(agent))
                .json(&json!({ "results": items })),
        )
        .await
    }
}

fn succeeded(task: &Value, result: Value) -> Value {
    json!({"task_id": task["task_id"], "lease_token": task["lease_token"],
           "outcome": "succeeded", "result": result})
}

fn statuses(answers: &Value) -> Vec<u64> {
    answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn one_results_call_ends_each_task_as_its_own_call_would() {
    let d = spawn_dispatcher().await;
    for _ in 0..4 {
        d.push_task().await;
    }
    let tasks = d.claim_now("agent-1", 4).await;
    assert_eq!(tasks.len(), 4);
    let mut stale = succeeded(&tasks[2], json!(null));
    stale["lease_token"] = json!("0".repeat(32));
    let items = json!([
        succeeded(&tasks[0], json!({"comment": "done"})),
        {"task_id": tasks[1]["task_id"], "lease_token": tasks[1]["lease_token"],
         "outcome": "failed", "error": "the model timed out"},
        stale,
        {"task_id": tasks[3]["task_id"], "lease_token": tasks[3]["lease_token"],
         "outcome": "failed", "error": "bad input", "retryable": false},
    ]);
    let (status, body) = d.results("agent-1", items).await;
    assert_eq!(status, 200, "{body}");
    let answers = &body["results"];
    assert_eq!(statuses(answers), [200, 200, 409, 200], "{body}");
    for (answer, task) in answers.as_array().unwrap().iter().zip(&tasks) {
        assert_eq!(
            answer["task_id"], task["task_id"],
            "answers keep the items' order"
        );
    }
    assert_eq!(answers[0]["state"], "succeeded");
    assert_eq!(answers[1]["state"], "queued");
    assert!(answers[1]["retry_at"].is_string());
    assert_eq!(answers[2]["error"]["code"], "lease_lost");
    assert_eq!(answers[3]["state"], "failed");

    let state = |t: &Value| t["state"].as_str().unwrap().to_owned();
    let stored: Vec<String> = futures_util::future::join_all(
        tasks.iter().map(|t| d.task(t["task_id"].as_str().unwrap())),
    )
    .await
    .iter()
    .map(state)
    .collect();
    assert_eq!(stored, ["succeeded", "queued", "leased", "failed"]);
    // Operators list tasks by any state, finished ones included.
    for (state, task) in [
        ("succeeded", &tasks[0]),
        ("queued", &tasks[1]),
        ("failed", &tasks[3]),
    ] {
        let (status, listing) = d.operator_get(&format!("/v1/tasks?state={state}")).await;
        assert_eq!(status, 200, "{listing}");
        let ids: Vec<&Value> = listing["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["task_id"])
            .collect();
        assert_eq!(ids, [&task["task_id"]], "{state}");
    }
    assert_eq!(
        d.task(tasks[0]["task_id"].as_str().unwrap()).await["result"]["comment"],
        "done"
    );
}

#[tokio::test]
async fn a_malformed_or_unstorable_item_is_refused_alone() {
    let d = spawn_dispatcher().await;
    for _ in 0..3 {
        d.push_task().await;
    }
    let tasks = d.claim_now("agent-1", 3).await;
    let items = json!([
        succeeded(&tasks[0], json!(null)),
        {"task_id": "not-a-task-id", "lease_token": tasks[1]["lease_token"], "outcome": "succeeded"},
        succeeded(&tasks[1], json!({"text": "a NUL \u{0} inside"})),
        {"task_id": tasks[2]["task_id"], "lease_token": tasks[2]["lease_token"], "outcome": "failed"},
        succeeded(&tasks[2], json!(null)),
    ]);
    let (status, body) = d.results("agent-1", items).await;
    assert_eq!(status, 200, "{body}");
    let answers = &body["results"];
    assert_eq!(statuses(answers), [200, 400, 400, 400, 200], "{body}");
    assert_eq!(answers[1]["error"]["code"], "invalid_request");
    assert_eq!(
        answers[1]["task_id"], "not-a-task-id",
        "a refusal names the item"
    );
    assert_eq!(answers[2]["error"]["code"], "unstorable_value");
    assert_eq!(
        answers[3]["error"]["code"], "invalid_request",
        "a failure needs its error"
    );
    for t in [&tasks[0], &tasks[2]] {
        assert_eq!(
            d.task(t["task_id"].as_str().unwrap()).await["state"],
            "succeeded"
        );
    }
    assert_eq!(
        d.task(tasks[1]["task_id"].as_str().unwrap()).await["state"],
        "leased",
        "the refused result changed nothing; the lease is still held"
    );
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("dispatcher_requests_rejected_total{reason=\"unstorable_value\"} 1"),
        "each refused item is counted: {metrics}"
    );
}

#[tokio::test]
async fn repeating_a_results_call_answers_the_same_and_changes_nothing() {
    let d = spawn_dispatcher().await;
    d.push_task().await;
    d.push_task().await;
    let tasks = d.claim_now("agent-1", 2).await;
    let items = json!([
        succeeded(&tasks[0], json!({"n": 1})),
        {"task_id": tasks[1]["task_id"], "lease_token": tasks[1]["lease_token"],
         "outcome": "failed", "error": "flaky"},
    ]);
    let (_, first) = d.results("agent-1", items.clone()).await;
    let (status, again) = d.results("agent-1", items).await;
    assert_eq!(status, 200);
    assert_eq!(statuses(&again["results"]), [200, 200]);
    assert_eq!(again["results"][0]["state"], "succeeded");
    assert_eq!(
        again["results"][1], first["results"][1],
        "a failure's repeat names the same retry"
    );
    let retried = d.task(tasks[1]["task_id"].as_str().unwrap()).await;
    assert_eq!(
        retried["attempt"], 1,
        "the repeat did not fail the task twice"
    );
}

#[tokio::test]
async fn a_claim_ends_the_agents_finished_tasks_before_it_claims_more() {
    let d = spawn_dispatcher().await;
    for _ in 0..3 {
        d.push_task().await;
    }
    let first = d.claim_now("agent-1", 2).await;
    let finished: Vec<Value> = first.iter().map(|t| succeeded(t, json!(null))).collect();
    let (status, body) = d
        .claim(
            "agent-1",
            json!({"max_tasks": 2, "wait_secs": 0, "finished": finished}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(statuses(&body["finished"]), [200, 200]);
    assert_eq!(body["tasks"].as_array().unwrap().len(), 1, "the third task");
    for t in &first {
        assert_eq!(
            d.task(t["task_id"].as_str().unwrap()).await["state"],
            "succeeded"
        );
    }
    // Nothing left to claim: the answers still come back (200, not 204).
    let last = succeeded(&body["tasks"][0], json!(null));
    let (status, body) = d
        .claim("agent-1", json!({"wait_secs": 0, "finished": [last]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(statuses(&body["finished"]), [200]);
    assert_eq!(body["tasks"], json!([]));
}

#[tokio::test]
async fn a_call_with_more_items_than_allowed_is_refused_whole() {
    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .expect("test database");
    let d = spawn_dispatcher_with(db, |s| s.limits.max_results_per_call = 2).await;
    for _ in 0..3 {
        d.push_task().await;
    }
    let tasks = d.claim_now("agent-1", 3).await;
    let items: Vec<Value> = tasks.iter().map(|t| succeeded(t, json!(null))).collect();
    let (status, body) = d.results("agent-1", json!(items)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    for t in &tasks {
        assert_eq!(
            d.task(t["task_id"].as_str().unwrap()).await["state"],
            "leased"
        );
    }
    let (status, body) = d.results("agent-2", json!(items[..2])).await;
    assert_eq!(status, 200);
    assert_eq!(
        statuses(&body["results"]),
        [409, 409],
        "another agent cannot end this agent's tasks"
    );
}
