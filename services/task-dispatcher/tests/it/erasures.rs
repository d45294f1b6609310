//! Erasures from dedup-store's relay: the payload goes, a task that has not
//! finished will not run, finished history stays, and the tombstones and
//! quarantine records go with the retention.

use serde_json::json;

use crate::helpers::{RELAY, event, send, spawn_dispatcher};

#[tokio::test]
async fn an_erasure_deletes_each_payload_stops_unfinished_tasks_and_keeps_finished_history() {
    let d = spawn_dispatcher().await;
    let done = d.push_task().await;
    let task = d.claim_now("agent-1", 1).await.remove(0);
    d.lease_call("agent-1", &task, "complete", json!({})).await;
    let running = d.push_task().await;
    let leased = d.claim_now("agent-1", 1).await.remove(0);
    let queued = d.push_task().await;
    let erasures: Vec<_> = [&done, &running, &queued, &"00000000000000aa".to_owned()]
        .iter()
        .map(|id| json!({"task_id": id, "reason": "leaked token"}))
        .collect();
    let call = || {
        d.http
            .post(format!("{}/v1/internal/erasures", d.url))
            .bearer_auth(RELAY)
            .json(&json!({ "erasures": erasures }))
    };
    let (status, body) = send(call()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["payloads_erased"].as_u64(), body["cancelled"].as_u64()),
        (Some(3), Some(2)),
        "{body}"
    );
    assert_eq!(d.db.scalar("SELECT count(*) FROM task_payloads").await, 0);
    assert_eq!(
        d.task(&done).await["state"],
        "succeeded",
        "finished history stays"
    );
    assert_eq!(d.task(&queued).await["state"], "cancelled");
    assert_eq!(d.task(&queued).await["cancel_reason"], "erased");
    let heartbeat = d
        .lease_call("agent-1", &leased, "heartbeat", json!({}))
        .await;
    assert_eq!(
        heartbeat.1["cancel_requested"], true,
        "the running agent is asked to stop: {heartbeat:?}"
    );
    let (status, again) = send(call()).await;
    assert_eq!(
        (status, again["payloads_erased"].as_u64()),
        (200, Some(0)),
        "a repeat changes nothing"
    );

    let (status, _) = send(
        d.http
            .post(format!("{}/v1/internal/erasures", d.url))
            .bearer_auth("not-the-relay")
            .json(&json!({ "erasures": [] })),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn erasure_tombstones_and_quarantine_records_are_pruned_after_the_retention() {
    let d = spawn_dispatcher().await;
    let (status, _) = send(
        d.http
            .post(format!("{}/v1/internal/erasures", d.url))
            .bearer_auth(RELAY)
            .json(&json!({ "erasures": [{"task_id": "00000000000000ab", "reason": "r"}] })),
    )
    .await;
    assert_eq!(status, 200);
    let mut poisoned = event("github", "push", json!({}));
    poisoned["headers"] = json!({"user-agent": "a\u{0}b"});
    d.handoff(std::slice::from_ref(&poisoned)).await;
    let count =
        "SELECT (SELECT count(*) FROM erased_tasks) + (SELECT count(*) FROM quarantined_events)";
    assert_eq!(d.db.scalar(count).await, 2);
    assert_eq!(
        d.maintenance.prune_once().await.unwrap(),
        0,
        "within the retention"
    );
    d.advance(8 * 24 * 3600);
    assert_eq!(d.maintenance.prune_once().await.unwrap(), 2);
    assert_eq!(d.db.scalar(count).await, 0);
}
