use crate::helpers::{GITLAB_TOKEN, TestStack, send, spawn_stack};
use test_support::sign;

async fn assert_stored_once(
    stack: &TestStack,
    source: &str,
    delivery: &str,
    body: &[u8],
    task_id: &str,
) {
    // A fresh connection: what the 2xx promised is committed and visible.
    let db = stack.db.connect().await.unwrap();
    let rows = db
        .query(
            "SELECT task_id, body FROM events WHERE source = $1 AND event_uuid = $2",
            &[&source, &delivery],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{source}/{delivery} stored exactly once");
    assert_eq!(rows[0].get::<_, String>(0), task_id);
    assert_eq!(
        rows[0].get::<_, Vec<u8>>(1),
        body,
        "raw body stored byte-exact"
    );
}

#[tokio::test]
async fn a_signed_github_delivery_is_acknowledged_once_committed_and_its_redelivery_is_a_duplicate()
{
    let stack = spawn_stack().await;
    let body = br#"{"ref":"refs/heads/main",  "after":"abc"}"#;
    let (status, receipt) = send(stack.github("gh-1", body)).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["status"], "accepted");
    assert_eq!(receipt["delivery_id"], "gh-1");
    let task_id = receipt["task_id"].as_str().unwrap().to_owned();
    assert_stored_once(&stack, "github", "gh-1", body, &task_id).await;

    let (status, again) = send(stack.github("gh-1", body)).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["task_id"], task_id.as_str());
    assert_stored_once(&stack, "github", "gh-1", body, &task_id).await;
}

#[tokio::test]
async fn a_standard_webhooks_delivery_is_stored_with_its_type_and_retries_are_duplicates() {
    let stack = spawn_stack().await;
    let body = br#"{"type":"invoice.paid","timestamp":"2026-11-27T10:00:00Z","data":{"id":1}}"#;
    let (status, receipt) = send(stack.standard("msg_2a", body)).await;
    assert_eq!(status, 202, "{receipt}");
    let task_id = receipt["task_id"].as_str().unwrap().to_owned();
    assert_stored_once(&stack, "billing", "msg_2a", body, &task_id).await;
    // A retry is signed anew with a new timestamp but keeps its webhook-id.
    let (status, again) = send(stack.standard("msg_2a", body)).await;
    assert_eq!(
        (status, again["task_id"].as_str()),
        (200, Some(task_id.as_str()))
    );

    let db = stack.db.connect().await.unwrap();
    let row = db
        .query_one(
            "SELECT event_type, headers FROM events WHERE event_uuid = 'msg_2a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "invoice.paid");
    let headers: serde_json::Value = row.get(1);
    assert_eq!(headers["webhook-id"], "msg_2a");
    assert!(
        headers.get("webhook-signature").is_none(),
        "signatures are not stored"
    );
}

#[tokio::test]
async fn a_gitlab_delivery_signed_with_a_signing_token_is_stored_under_its_idempotency_key() {
    let stack = spawn_stack().await;
    let body = br#"{"object_kind":"merge_request"}"#;
    let (status, receipt) = send(stack.gitlab_signed("idem-7", body)).await;
    assert_eq!(status, 202, "{receipt}");
    assert_stored_once(
        &stack,
        "gitlab",
        "idem-7",
        body,
        receipt["task_id"].as_str().unwrap(),
    )
    .await;
    let db = stack.db.connect().await.unwrap();
    let row = db
        .query_one(
            "SELECT event_type, headers FROM events WHERE event_uuid = 'idem-7'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Merge Request Hook");
    let headers: serde_json::Value = row.get(1);
    assert!(
        headers.get("x-gitlab-token").is_none(),
        "the secret token is never stored"
    );
}

#[tokio::test]
async fn a_captured_signed_gitlab_delivery_replayed_with_a_fresh_idempotency_key_is_a_duplicate() {
    let stack = spawn_stack().await;
    let body = br#"{"object_kind":"merge_request"}"#;
    let now = sign::now_unix();
    let signature = sign::standard(&stack.gitlab_signing_secret, "idem-signed", now, body);
    let delivery = |idempotency_key: &str| {
        stack
            .http
            .post(format!("{}/hooks/gitlab", stack.ingest))
            .header("content-type", "application/json")
            .header("x-gitlab-event", "Merge Request Hook")
            .header("idempotency-key", idempotency_key)
            .header("webhook-id", "idem-signed")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", &signature)
            .body(body.to_vec())
    };
    let (status, first) = send(delivery("idem-signed")).await;
    assert_eq!(status, 202, "{first}");
    // The key is not signed: an attacker can change it, not webhook-id.
    let (status, replay) = send(delivery("a-fresh-key")).await;
    assert_eq!(
        (status, replay["status"].as_str()),
        (200, Some("duplicate")),
        "{replay}"
    );
    assert_eq!(replay["task_id"], first["task_id"]);
    assert_eq!(stack.stored_count().await, 1);
}

#[tokio::test]
async fn a_gitlab_delivery_with_only_the_secret_token_is_checked_and_stored() {
    let stack = spawn_stack().await;
    let body = br#"{"object_kind":"push"}"#;
    let (status, receipt) = send(stack.gitlab_token("idem-8", GITLAB_TOKEN, body)).await;
    assert_eq!(status, 202, "{receipt}");
    assert_stored_once(
        &stack,
        "gitlab",
        "idem-8",
        body,
        receipt["task_id"].as_str().unwrap(),
    )
    .await;
    let (status, refused) = send(stack.gitlab_token("idem-9", "wrong-token", body)).await;
    assert_eq!(status, 401);
    assert_eq!(refused["error"]["code"], "invalid_token");
}
