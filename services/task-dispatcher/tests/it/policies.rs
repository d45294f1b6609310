use serde_json::{Value, json};

use crate::helpers::event;
use crate::helpers::spawn_dispatcher;

fn merge_request(iid: u64) -> Value {
    event(
        "gitlab",
        "Merge Request Hook",
        json!({"project": {"id": 9}, "object_attributes": {"iid": iid}}),
    )
}

fn pull_request(number: u64) -> Value {
    event("github", "pull_request", json!({"number": number}))
}

#[tokio::test]
async fn a_newer_task_supersedes_queued_ones_and_asks_the_running_one_to_stop() {
    let d = spawn_dispatcher().await;
    let first = merge_request(1);
    d.handoff(std::slice::from_ref(&first)).await;
    let running = d.claim_now("agent-1", 1).await.remove(0);
    assert_eq!(running["task_id"], first["task_id"]);

    let (second, third, other) = (merge_request(1), merge_request(1), merge_request(2));
    d.handoff(&[second.clone(), third.clone(), other.clone()])
        .await;

    let state = |id: &Value| {
        let id = id.as_str().unwrap().to_owned();
        let d = &d;
        async move { d.task(&id).await }
    };
    let second_task = state(&second["task_id"]).await;
    assert_eq!(second_task["state"], "cancelled");
    assert_eq!(second_task["cancel_reason"], "superseded");
    assert_eq!(state(&third["task_id"]).await["state"], "queued");
    assert_eq!(
        state(&other["task_id"]).await["state"],
        "queued",
        "another merge request is not affected"
    );

    let (_, beat) = d
        .lease_call("agent-1", &running, "heartbeat", json!({}))
        .await;
    assert_eq!(beat["cancel_requested"], true);
    assert_eq!(beat["cancel_reason"], "superseded");

    let claimed: Vec<Value> = d
        .claim_now("agent-2", 10)
        .await
        .iter()
        .map(|t| t["task_id"].clone())
        .collect();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.contains(&third["task_id"]) && claimed.contains(&other["task_id"]));
}

#[tokio::test]
async fn serialize_runs_one_task_per_entity_at_a_time_in_order() {
    let d = spawn_dispatcher().await;
    let (a1, a2, a3, b1) = (
        pull_request(1),
        pull_request(1),
        pull_request(1),
        pull_request(2),
    );
    d.handoff(&[a1.clone(), a2.clone(), a3.clone(), b1.clone()])
        .await;

    let first: Vec<Value> = d.claim_now("agent-1", 10).await;
    let ids: Vec<&Value> = first.iter().map(|t| &t["task_id"]).collect();
    assert_eq!(ids.len(), 2, "one per entity: {ids:?}");
    assert!(ids.contains(&&a1["task_id"]) && ids.contains(&&b1["task_id"]));
    assert!(
        d.claim_now("agent-2", 10).await.is_empty(),
        "entity 1 is busy, entity 2 has nothing else"
    );

    let a1_task = first
        .iter()
        .find(|t| t["task_id"] == a1["task_id"])
        .unwrap();
    d.lease_call("agent-1", a1_task, "complete", json!({}))
        .await;
    let next = d.claim_now("agent-2", 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0]["task_id"], a2["task_id"],
        "creation order within the entity"
    );
    // A retry keeps its place: a2 failing does not let a3 jump ahead.
    d.lease_call("agent-2", &next[0], "fail", json!({"error": "flaky"}))
        .await;
    assert!(d.claim_now("agent-3", 10).await.is_empty());
    d.advance(60);
    let again = d.claim_now("agent-3", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["task_id"], a2["task_id"]);
}
