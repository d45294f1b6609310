//! Erasure on request: the event and its task's copy are gone for good,
//! with an audit record; a retry of the delivery stores nothing.

use serde_json::{Value, json};
use test_support::pg::PgCluster;

use crate::helpers::{error_code, event, sample, spawn_store};
use crate::relay::{RELAY_TOKEN, count, drain, spawn_dispatcher, spawn_store_relaying_to};

async fn erase(
    store: &crate::helpers::TestStore,
    request: &Value,
    token: &str,
) -> reqwest::Response {
    store
        .http
        .post(format!("{}/v1/events/erase", store.address))
        .bearer_auth(token)
        .json(request)
        .send()
        .await
        .unwrap()
}

const OPERATOR: &str = test_support::STORE_OPERATOR_TOKEN;

/// An operator's erasure, and its answer.
async fn erased(store: &crate::helpers::TestStore, request: &Value) -> Value {
    erase(store, request, OPERATOR).await.json().await.unwrap()
}

#[tokio::test]
async fn an_erased_event_is_gone_with_an_audit_record_and_a_retry_of_its_delivery_stores_nothing() {
    let store = spawn_store().await;
    let first: Value = store
        .post_event(&event("github", "leaky", b"{\"token\":\"ghp_leaked\"}"))
        .await
        .json()
        .await
        .unwrap();
    store.post_event(&event("github", "fine", b"{}")).await;
    let request = json!({
        "source": "github", "event_uuid": "leaky",
        "reason": "a token in the payload", "requested_by": "alice",
        "request_id": "incident-42",
    });

    let dry: Value = erased(&store, &request).await;
    assert_eq!(dry["dry_run"], true, "a dry run unless asked otherwise");
    assert_eq!(dry["events"][0]["event_uuid"], "leaky");
    assert_eq!(
        count(&store.db, "SELECT count(*) FROM events").await,
        2,
        "a dry run erases nothing"
    );

    let mut real = request.clone();
    real["dry_run"] = json!(false);
    let answer = erase(&store, &real, OPERATOR).await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["events"].as_array().unwrap().len(), 1);
    assert_eq!(answer["events"][0]["task_id"], first["task_id"]);
    assert_eq!(answer["more"], false);
    assert_eq!(
        answer["task_payloads"], "pending",
        "no dispatcher is configured here"
    );
    for sql in [
        "SELECT count(*) FROM events WHERE position('ghp_leaked' in convert_from(body, 'UTF8')) > 0",
        "SELECT count(*) FROM events WHERE event_uuid = 'leaky'",
        "SELECT count(*) FROM outbox o JOIN erasures x USING (task_id)",
    ] {
        assert_eq!(count(&store.db, sql).await, 0, "{sql}");
    }
    assert_eq!(
        count(&store.db, "SELECT count(*) FROM events").await,
        1,
        "the other event stays"
    );
    let db = store.db.connect().await.unwrap();
    let audit = db
        .query_one(
            "SELECT requested_by, reason, token, request_id FROM erasures",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(audit.get::<_, &str>(0), "alice");
    assert_eq!(audit.get::<_, &str>(1), "a token in the payload");
    let token: &str = audit.get(2);
    assert!(
        token.starts_with("sha256:") && !token.contains(OPERATOR),
        "{token}"
    );
    assert_eq!(audit.get::<_, &str>(3), "incident-42");

    let retry = store
        .post_event(&event("github", "leaky", b"{\"token\":\"ghp_leaked\"}"))
        .await;
    assert_eq!(retry.status(), 200, "the sender's retry is a duplicate");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["task_id"], first["task_id"]);
    assert_eq!(
        count(&store.db, "SELECT count(*) FROM events").await,
        1,
        "and stores nothing"
    );

    let repeat: Value = erase(&store, &real, OPERATOR).await.json().await.unwrap();
    assert_eq!(
        repeat["events"], answer["events"],
        "a repeat answers with what the request erased"
    );
    let metrics = store.metrics_text().await;
    assert_eq!(sample(&metrics, "dedup_events_erased_total"), 1.0);
    assert_eq!(sample(&metrics, "dedup_erasures_unforwarded"), 1.0);
}

#[tokio::test]
async fn an_erasure_needs_an_operator_a_reason_and_a_filter_narrower_than_a_source() {
    let store = spawn_store().await;
    store.post_event(&event("github", "e1", b"{}")).await;
    let good = json!({"source": "github", "event_uuid": "e1", "reason": "r", "requested_by": "bob", "dry_run": false});
    let ingest = erase(&store, &good, test_support::INGEST_TOKEN).await;
    assert_eq!(ingest.status(), 401, "ingest's token may store, not erase");

    let cases = [
        (
            json!({"source": "github", "reason": "r", "requested_by": "bob", "dry_run": false}),
            "a source alone",
        ),
        (
            json!({"source": "github", "event_uuid": "e1", "reason": " ", "requested_by": "bob", "dry_run": false}),
            "no reason",
        ),
        (
            json!({"source": "github", "event_uuid": "e1", "reason": "r\u{0}", "requested_by": "bob", "dry_run": false}),
            "NUL in the reason",
        ),
        (
            json!({"source": "github", "event_uuid": "e1", "reason": "r", "requested_by": "bob", "request_id": "a b", "dry_run": false}),
            "a request id with a space",
        ),
        (
            json!({"source": "github", "event_uuid": "e1", "reason": "r", "requested_by": "bob", "limit": 0}),
            "a limit of 0",
        ),
        (
            json!({"source": "GitHub!", "event_uuid": "e1", "reason": "r", "requested_by": "bob"}),
            "an invalid source",
        ),
        (
            json!({"source": "github", "event_uuid": "e1", "reason": "r"}),
            "no requester",
        ),
    ];
    for (request, case) in cases {
        let answer = erase(&store, &request, OPERATOR).await;
        assert_eq!(answer.status(), 400, "{case}");
        let code = error_code(answer).await;
        assert!(
            ["invalid_request", "unstorable_value"].contains(&code.as_str()),
            "{case}: {code}"
        );
    }
    assert_eq!(
        count(&store.db, "SELECT count(*) FROM events").await,
        1,
        "nothing was erased"
    );
}

#[tokio::test]
async fn events_matching_a_filter_are_erased_in_rounds_of_the_limit() {
    let store = spawn_store().await;
    for i in 0..5 {
        store
            .post_event(&event("gitlab", &format!("m-{i}"), b"{}"))
            .await;
    }
    store.post_event(&event("github", "other", b"{}")).await;
    let mut request = json!({
        "source": "gitlab", "event_type": "push", "reason": "personal data", "requested_by": "carol",
        "dry_run": false, "limit": 2, "request_id": "gdpr-7",
    });
    let mut rounds = 0;
    let answer = loop {
        rounds += 1;
        let answer: Value = erased(&store, &request).await;
        if answer["more"] == false {
            break answer;
        }
        request["request_id"] = answer["request_id"].clone();
    };
    assert_eq!(rounds, 3, "two, two, then the last one");
    assert_eq!(answer["events"].as_array().unwrap().len(), 5);
    assert_eq!(
        count(&store.db, "SELECT count(*) FROM events").await,
        1,
        "only github's stays"
    );
}

#[tokio::test]
async fn erasing_a_relayed_event_erases_its_task_payload_and_a_late_copy_creates_nothing() {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (dispatcher, _) = spawn_dispatcher(&dispatcher_db).await;
    let (store, relay) = spawn_store_relaying_to(&dispatcher, 100).await;
    let stored: Value = store
        .post_event(&event("github", "leaky", b"{\"password\":\"hunter2\"}"))
        .await
        .json()
        .await
        .unwrap();
    let task_id = stored["task_id"].as_str().unwrap().to_owned();
    assert_eq!(drain(&relay).await, 1);
    let tasks = dispatcher_db.connect().await.unwrap();
    let payloads = "SELECT count(*) FROM task_payloads";
    assert_eq!(dispatcher_db.scalar(payloads).await, 1);

    let request = json!({"source": "github", "event_uuid": "leaky", "reason": "a password", "requested_by": "dave", "dry_run": false});
    let answer: Value = erased(&store, &request).await;
    assert_eq!(answer["task_payloads"], "erased", "{answer}");
    assert_eq!(
        dispatcher_db.scalar(payloads).await,
        0,
        "the body is gone from both databases"
    );
    let task = tasks
        .query_one(
            "SELECT state, cancel_reason FROM tasks WHERE task_id = $1",
            &[&task_id],
        )
        .await
        .unwrap();
    assert_eq!(
        (task.get::<_, &str>(0), task.get::<_, Option<&str>>(1)),
        ("cancelled", Some("erased")),
        "a task with no payload left never runs"
    );
    assert_eq!(
        count(
            &store.db,
            "SELECT count(*) FROM erasures WHERE forwarded_at IS NULL"
        )
        .await,
        0
    );

    // Erased before the relay delivered it: no task is ever created, even
    // from a relay batch that was in flight and arrives late.
    let unsent: Value = store
        .post_event(&event("github", "unsent", b"{\"password\":\"hunter2\"}"))
        .await
        .json()
        .await
        .unwrap();
    let request = json!({"source": "github", "event_uuid": "unsent", "reason": "a password", "requested_by": "dave", "dry_run": false});
    let answer: Value = erased(&store, &request).await;
    assert_eq!(answer["task_payloads"], "erased", "{answer}");
    assert_eq!(drain(&relay).await, 0, "its outbox row went with it");
    let late = json!({"events": [{
        "task_id": unsent["task_id"], "source": "github", "event_uuid": "unsent", "event_type": "push",
        "received_at": "2026-11-27T10:00:00Z", "trace_id": null, "traceparent": null,
        "headers": {}, "body_base64": "eyJwYXNzd29yZCI6Imh1bnRlcjIifQ==",
    }]});
    let answer = reqwest::Client::new()
        .post(format!("{dispatcher}/v1/internal/events"))
        .bearer_auth(RELAY_TOKEN)
        .json(&late)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        dispatcher_db.scalar("SELECT count(*) FROM tasks").await,
        1,
        "the late copy creates no task"
    );
    assert_eq!(
        dispatcher_db.scalar(payloads).await,
        0,
        "and stores no payload"
    );
    assert_eq!(
        dispatcher_db
            .scalar("SELECT count(*) FROM quarantined_events")
            .await,
        0
    );
}

#[tokio::test]
async fn erasing_an_event_a_relay_is_delivering_waits_for_that_delivery_to_end_before_erasing_the_task()
 {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (dispatcher, _) = spawn_dispatcher(&dispatcher_db).await;
    let (store, relay) = spawn_store_relaying_to(&dispatcher, 100).await;
    store.post_event(&event("github", "in-flight", b"{}")).await;
    let db = store.db.connect_as_superuser().await.unwrap();
    // A relay has claimed the row and is calling the dispatcher.
    db.batch_execute(
        "UPDATE outbox SET claimed_until = now() + interval '30 seconds', claimed_by = 'other'",
    )
    .await
    .unwrap();
    let request = json!({"source": "github", "event_uuid": "in-flight", "reason": "r", "requested_by": "erin", "dry_run": false});
    let answer: Value = erased(&store, &request).await;
    assert_eq!(answer["task_payloads"], "pending", "{answer}");
    assert_eq!(
        relay.forward_erasures_once().await.unwrap(),
        0,
        "not while the claim lasts"
    );
    // The claim has run out.
    db.batch_execute("UPDATE erasures SET forward_after = now()")
        .await
        .unwrap();
    assert_eq!(relay.forward_erasures_once().await.unwrap(), 1);
    assert_eq!(
        dispatcher_db
            .scalar("SELECT count(*) FROM erased_tasks")
            .await,
        1
    );
}
