use serde_json::json;

use crate::helpers::{LEASE_SECS, sample, spawn_dispatcher};

#[tokio::test]
async fn a_heartbeat_extends_the_lease_past_its_first_expiry() {
    let d = spawn_dispatcher().await;
    d.push_task().await;
    let task = d.claim_now("agent-1", 1).await.remove(0);
    d.advance(LEASE_SECS - 5);
    let (status, beat) = d.lease_call("agent-1", &task, "heartbeat", json!({})).await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["cancel_requested"], false);
    d.advance(10); // past the first expiry, within the extended one
    assert_eq!(d.maintenance.expire_leases_once().await.unwrap(), 0);
    let (status, _) = d.lease_call("agent-1", &task, "complete", json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_silent_agent_loses_its_lease_the_task_is_reclaimed_and_its_late_completion_is_refused() {
    let d = spawn_dispatcher().await;
    let id = d.push_task().await;
    let first = d.claim_now("agent-1", 1).await.remove(0);

    d.advance(LEASE_SECS + 1);
    assert_eq!(d.maintenance.expire_leases_once().await.unwrap(), 1);
    let (status, body) = d
        .lease_call("agent-1", &first, "heartbeat", json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("lease_lost"))
    );

    let second = d.claim_now("agent-2", 1).await.remove(0);
    assert_eq!(second["task_id"], id.as_str());
    assert_eq!(second["attempt"], 2);
    assert_ne!(second["lease_token"], first["lease_token"]);

    let (status, body) = d
        .lease_call("agent-1", &first, "complete", json!({"result": "late"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("lease_lost"))
    );
    let (status, _) = d
        .lease_call("agent-2", &second, "complete", json!({"result": "on time"}))
        .await;
    assert_eq!(status, 200);
    // The agent retries its own call: answered as success, nothing changes.
    let (status, _) = d
        .lease_call("agent-2", &second, "complete", json!({"result": "again"}))
        .await;
    assert_eq!(status, 200);
    // Another agent presenting the winner's token is still refused.
    let (status, _) = d
        .lease_call("agent-3", &second, "complete", json!({}))
        .await;
    assert_eq!(status, 409);

    let task = d.task(&id).await;
    assert_eq!(task["state"], "succeeded");
    assert_eq!(task["result"], "on time");
    let outcomes: Vec<&str> = task["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["lease_lost", "succeeded"]);
    let metrics = d.metrics().await;
    assert_eq!(
        sample(&metrics, "dispatcher_lease_losses_total{kind=\"build\"}"),
        1.0
    );
    assert_eq!(
        sample(&metrics, "dispatcher_claims_total{kind=\"build\"}"),
        2.0
    );
}

#[tokio::test]
async fn a_lease_lost_on_the_last_attempt_makes_the_task_dead() {
    let d = spawn_dispatcher().await;
    let id = d.push_task().await; // build: max 3 attempts
    for _ in 0..3 {
        let task = d.claim_now("agent-1", 1).await.remove(0);
        // The agent has the task (it heartbeats), then goes silent.
        let (status, _) = d.lease_call("agent-1", &task, "heartbeat", json!({})).await;
        assert_eq!(status, 200);
        d.advance(LEASE_SECS + 1);
        assert_eq!(d.maintenance.expire_leases_once().await.unwrap(), 1);
    }
    assert_eq!(d.task(&id).await["state"], "dead");
    assert!(d.claim_now("agent-1", 1).await.is_empty());
    assert_eq!(
        sample(
            &d.metrics().await,
            "dispatcher_dead_letters_total{kind=\"build\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn claims_whose_answer_never_reached_the_agent_do_not_count_as_attempts_up_to_their_own_bound()
 {
    let d = spawn_dispatcher().await; // at most 5 unacknowledged leases
    let id = d.push_task().await; // build: max 3 attempts
    // Four claims whose answers were lost: no heartbeat, no result.
    for _ in 0..4 {
        assert_eq!(d.claim_now("agent-1", 1).await.len(), 1);
        d.advance(LEASE_SECS + 1);
        assert_eq!(d.maintenance.expire_leases_once().await.unwrap(), 1);
    }
    let task = d.task(&id).await;
    assert_eq!(task["state"], "queued", "a task that never ran is not dead");
    // It still has all three attempts: two that fail retryably...
    for _ in 0..2 {
        let task = d.claim_now("agent-2", 1).await.remove(0);
        let (status, body) = d
            .lease_call(
                "agent-2",
                &task,
                "fail",
                json!({"error": "flaky", "retryable": true}),
            )
            .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("queued")),
            "{body}"
        );
        d.advance(1000); // past the retry delay
    }
    // ...and a third, after which it is dead.
    let task = d.claim_now("agent-2", 1).await.remove(0);
    let (_, body) = d
        .lease_call(
            "agent-2",
            &task,
            "fail",
            json!({"error": "flaky", "retryable": true}),
        )
        .await;
    assert_eq!(body["state"], "dead", "{body}");

    // A task whose every claim is lost is dead after the fifth.
    let other = d.push_task().await;
    for lost in 1..=5 {
        assert_eq!(d.claim_now("agent-1", 1).await.len(), 1, "claim {lost}");
        d.advance(LEASE_SECS + 1);
        d.maintenance.expire_leases_once().await.unwrap();
    }
    let task = d.task(&other).await;
    assert_eq!(task["state"], "dead");
    assert_eq!(
        task["error"],
        "lease expired before the agent acknowledged it"
    );
}

#[tokio::test]
async fn a_cancel_reaches_a_running_agent_through_its_next_heartbeat() {
    let d = spawn_dispatcher().await;
    let id = d.push_task().await;
    let task = d.claim_now("agent-1", 1).await.remove(0);
    let (status, body) = d.operator_post(&format!("/v1/tasks/{id}/cancel")).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("requested")));

    let (status, beat) = d.lease_call("agent-1", &task, "heartbeat", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(beat["cancel_requested"], true);
    assert_eq!(beat["cancel_reason"], "cancelled");
    let (status, failed) = d
        .lease_call(
            "agent-1",
            &task,
            "fail",
            json!({"error": "stopped on request"}),
        )
        .await;
    assert_eq!((status, failed["state"].as_str()), (200, Some("cancelled")));
    let (status, _) = d.operator_post(&format!("/v1/tasks/{id}/cancel")).await;
    assert_eq!(status, 409, "a finished task cannot be cancelled");
}

#[tokio::test]
async fn cancelling_a_queued_task_keeps_it_from_ever_being_claimed() {
    let d = spawn_dispatcher().await;
    let id = d.push_task().await;
    let (status, body) = d.operator_post(&format!("/v1/tasks/{id}/cancel")).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("cancelled")));
    assert!(d.claim_now("agent-1", 1).await.is_empty());
    assert_eq!(d.task(&id).await["state"], "cancelled");
}

#[tokio::test]
async fn finished_tasks_are_pruned_after_the_retention_in_batches() {
    let d = spawn_dispatcher().await;
    let id = d.push_task().await;
    let task = d.claim_now("agent-1", 1).await.remove(0);
    d.lease_call("agent-1", &task, "complete", json!({})).await;
    let queued = d.push_task().await;
    assert_eq!(
        d.maintenance.prune_once().await.unwrap(),
        0,
        "within the retention"
    );
    d.advance(8 * 24 * 3600);
    assert_eq!(d.maintenance.prune_once().await.unwrap(), 1);
    assert_eq!(d.operator_get(&format!("/v1/tasks/{id}")).await.0, 404);
    assert_eq!(
        d.task(&queued).await["state"],
        "queued",
        "unfinished tasks are kept"
    );
}
