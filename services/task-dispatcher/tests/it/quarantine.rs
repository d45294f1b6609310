//! No content can stop the intake: an event that cannot become a task is
//! quarantined with its reason and the rest of its batch goes through;
//! values a sender can type are stored in a bounded form; agents get 400
//! for what cannot be stored, and the others in their batch are unaffected.

use serde_json::{Value, json};

use crate::helpers::{TestDispatcher, event, sample, spawn_dispatcher};

fn merge_request(project: Value, iid: u64) -> Value {
    event(
        "gitlab",
        "Merge Request Hook",
        json!({"project": {"id": project}, "object_attributes": {"iid": iid}}),
    )
}

async fn quarantined(d: &TestDispatcher) -> Vec<Value> {
    let (status, listing) = d.operator_get("/v1/quarantined-events").await;
    assert_eq!(status, 200, "{listing}");
    listing["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_unreadable_event_is_quarantined_and_the_rest_of_its_batch_become_tasks() {
    let d = spawn_dispatcher().await;
    let mut no_id = event("github", "push", json!({"n": 2}));
    no_id["task_id"] = json!("not-a-task-id");
    let mut nul_header = event("github", "push", json!({"n": 4}));
    nul_header["headers"] = json!({"user-agent": "a\u{0}b"});
    let mut bad_base64 = event("github", "push", json!({}));
    bad_base64["body_base64"] = json!("%%%");
    let good: Vec<Value> = (0..3)
        .map(|n| event("github", "push", json!({ "n": n })))
        .collect();
    let batch = vec![
        good[0].clone(),
        no_id,
        good[1].clone(),
        nul_header.clone(),
        bad_base64,
        good[2].clone(),
    ];

    let answer = d.handoff(&batch).await;

    assert_eq!(answer["created_count"], 3, "{answer}");
    assert_eq!(answer["quarantined"], 3, "{answer}");
    for e in &good {
        assert_eq!(
            d.task(e["task_id"].as_str().unwrap()).await["state"],
            "queued"
        );
    }
    let records = quarantined(&d).await;
    assert_eq!(records.len(), 3, "{records:?}");
    let reason_of = |task_id: &Value| {
        records
            .iter()
            .find(|r| r["task_id"] == *task_id)
            .map(|r| r["reason"].as_str().unwrap().to_owned())
    };
    assert!(reason_of(&nul_header["task_id"]).unwrap().contains("NUL"));
    assert!(
        records
            .iter()
            .any(|r| r["task_id"].is_null() && r["reason"].as_str().unwrap().contains("task id")),
        "{records:?}"
    );
    let metrics = d.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "dispatcher_events_quarantined_total{source=\"github\"}"
        ),
        3.0
    );
    assert_eq!(sample(&metrics, "dispatcher_quarantined_events"), 3.0);

    // The relay sends the batch again (its answer was lost): nothing doubles.
    let again = d.handoff(&batch).await;
    assert_eq!(again["created_count"], 0, "{again}");
    assert_eq!(
        quarantined(&d).await.len(),
        3 + 1,
        "the record without a task id is added again"
    );
}

#[tokio::test]
async fn entity_keys_with_nul_or_10k_characters_become_tasks_and_equal_keys_still_supersede() {
    let d = spawn_dispatcher().await;
    let long = "x".repeat(10_000);
    let first = merge_request(json!("a\u{0}b"), 1);
    let second = merge_request(json!("a\u{0}b"), 1);
    let other = merge_request(json!("a\u{0}c"), 1);
    let long_first = merge_request(json!(long.clone()), 7);
    let long_second = merge_request(json!(long), 7);
    let answer = d
        .handoff(&[first.clone(), other.clone(), long_first.clone()])
        .await;
    assert_eq!(answer["created_count"], 3, "{answer}");
    let answer = d.handoff(&[second.clone(), long_second.clone()]).await;
    assert_eq!(answer["created_count"], 2, "{answer}");
    assert_eq!(answer["superseded"], 2, "{answer}");

    let states = [&first, &long_first, &second, &long_second, &other];
    let mut got = Vec::new();
    for e in states {
        got.push(d.task(e["task_id"].as_str().unwrap()).await["state"].clone());
    }
    // A different key (`other`) is not superseded.
    assert_eq!(
        got,
        ["cancelled", "cancelled", "queued", "queued", "queued"]
    );
    assert!(quarantined(&d).await.is_empty());
}

#[tokio::test]
async fn an_event_postgresql_refuses_is_found_and_quarantined_while_its_batch_commits_and_an_operator_can_retry_it()
 {
    let d = spawn_dispatcher().await;
    // A refusal no check at the door knows about, as PostgreSQL gives it.
    let admin = d.db.connect_as_superuser().await.unwrap();
    admin
        .batch_execute(
            "ALTER TABLE tasks ADD CONSTRAINT no_poison CHECK (event_uuid NOT LIKE 'poison-%')",
        )
        .await
        .unwrap();
    let mut batch: Vec<Value> = (0..40)
        .map(|n| event("github", "push", json!({ "n": n })))
        .collect();
    let mut bad = event("github", "push", json!({"n": "bad"}));
    bad["event_uuid"] = json!("poison-1");
    batch.insert(23, bad.clone());

    let answer = d.handoff(&batch).await;

    assert_eq!(answer["created_count"], 40, "{answer}");
    assert_eq!(answer["quarantined"], 1, "{answer}");
    let records = quarantined(&d).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["task_id"], bad["task_id"]);
    assert!(
        records[0]["reason"].as_str().unwrap().contains("no_poison"),
        "{records:?}"
    );
    let id = records[0]["id"].as_i64().unwrap();

    // Retried while the cause is still there: still quarantined, and says why.
    let (status, answer) = d
        .operator_post(&format!("/v1/quarantined-events/{id}/retry"))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_poison")
    );
    assert_eq!(quarantined(&d).await[0]["attempts"], 2);

    // Fixed: the retry makes its task, and the record goes with it.
    admin
        .batch_execute("ALTER TABLE tasks DROP CONSTRAINT no_poison")
        .await
        .unwrap();
    let (status, answer) = d
        .operator_post(&format!("/v1/quarantined-events/{id}/retry"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["created_count"], 1, "{answer}");
    assert_eq!(
        d.task(bad["task_id"].as_str().unwrap()).await["state"],
        "queued"
    );
    assert!(quarantined(&d).await.is_empty());
    let (status, _) = d
        .operator_post(&format!("/v1/quarantined-events/{id}/retry"))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn agents_get_400_for_a_result_or_error_postgresql_cannot_store_and_good_calls_beside_them_succeed()
 {
    let d = spawn_dispatcher().await;
    for n in 0..6 {
        d.handoff(&[event("github", "push", json!({ "n": n }))])
            .await;
    }
    let tasks = d.claim_now("agent-1", 6).await;
    assert_eq!(tasks.len(), 6);
    // Completions sent at once share group-commit batches.
    let calls = tasks.iter().enumerate().map(|(i, task)| {
        let extra = match i {
            2 => json!({"result": {"summary": "done\u{0}"}}),
            4 => json!({"result": {"k\u{0}": 1}}),
            _ => json!({"result": {"summary": "done"}}),
        };
        d.lease_call("agent-1", task, "complete", extra)
    });
    let answers = futures_util::future::join_all(calls).await;
    for (i, (status, answer)) in answers.iter().enumerate() {
        if i == 2 || i == 4 {
            assert_eq!(*status, 400, "{answer}");
            assert_eq!(answer["error"]["code"], "unstorable_value");
        } else {
            assert_eq!(*status, 200, "{i}: {answer}");
        }
    }
    let (status, answer) = d
        .lease_call("agent-1", &tasks[2], "fail", json!({"error": "exit\u{0}1"}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "unstorable_value");
    // Still leased to its agent: a storable completion goes through.
    let (status, answer) = d
        .lease_call("agent-1", &tasks[2], "complete", json!({"result": "ok"}))
        .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn a_completion_postgresql_refuses_in_a_batch_is_found_and_refused_while_the_others_commit() {
    let d = spawn_dispatcher().await;
    let admin = d.db.connect_as_superuser().await.unwrap();
    admin
        .batch_execute(
            "ALTER TABLE tasks ADD CONSTRAINT no_poison CHECK (result IS NULL OR NOT result ? 'poison')",
        )
        .await
        .unwrap();
    for n in 0..8 {
        d.handoff(&[event("github", "push", json!({ "n": n }))])
            .await;
    }
    let tasks = d.claim_now("agent-1", 8).await;
    let calls = tasks.iter().enumerate().map(|(i, task)| {
        let result = if i == 5 {
            json!({"poison": true})
        } else {
            json!({"ok": i})
        };
        d.lease_call("agent-1", task, "complete", json!({ "result": result }))
    });
    let answers = futures_util::future::join_all(calls).await;
    for (i, (status, answer)) in answers.iter().enumerate() {
        let expected = if i == 5 { 400 } else { 200 };
        assert_eq!(*status, expected, "{i}: {answer}");
    }
    assert_eq!(answers[5].1["error"]["code"], "unstorable_value");
}
