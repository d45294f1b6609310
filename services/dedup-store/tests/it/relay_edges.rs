//! The relay holds nothing across its call to task-dispatcher, and one event
//! the dispatcher refuses on its own never stops the ones behind it.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::Value;

use crate::helpers::event;
use crate::relay::{count, drain, spawn_store_relaying_to};

/// What the stand-in dispatcher saw: delivery ids, per call.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// A stand-in task-dispatcher: before answering, `check` runs (with the
/// batch's delivery ids); it answers 400 to any batch holding `refuse`.
async fn stand_in(
    refuse: &'static str,
    check: impl Fn(Vec<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    + Send
    + Sync
    + Clone
    + 'static,
) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let recorded = seen.clone();
    let server = HttpServer::new(move || {
        let (recorded, check) = (recorded.clone(), check.clone());
        App::new().route(
            "/v1/internal/events",
            web::post().to(move |body: web::Json<Value>| {
                let (recorded, check) = (recorded.clone(), check.clone());
                async move {
                    let uuids: Vec<String> = body["events"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["event_uuid"].as_str().unwrap().to_owned())
                        .collect();
                    check(uuids.clone()).await;
                    recorded.lock().unwrap().push(uuids.clone());
                    if uuids.iter().any(|u| u == refuse) {
                        HttpResponse::BadRequest().json(serde_json::json!({
                            "error": {"code": "invalid_request", "message": "refused"}}))
                    } else {
                        HttpResponse::Ok().json(serde_json::json!({}))
                    }
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());
    (url, seen)
}

#[tokio::test]
async fn no_transaction_is_open_on_the_store_while_the_dispatcher_is_called() {
    let open_during_call: Arc<Mutex<Vec<i64>>> = Arc::default();
    let probe = Arc::new(Mutex::new(None::<String>));
    let (url, seen) = stand_in("none", {
        let (open_during_call, probe) = (open_during_call.clone(), probe.clone());
        move |_| {
            let (open_during_call, probe) = (open_during_call.clone(), probe.clone());
            Box::pin(async move {
                let conn = probe.lock().unwrap().clone().unwrap();
                let client = test_support_connect(&conn).await;
                let open: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()
                           AND state LIKE 'idle in transaction%'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                open_during_call.lock().unwrap().push(open);
            })
        }
    })
    .await;
    let (store, relay) = spawn_store_relaying_to(&url, 100).await;
    *probe.lock().unwrap() = Some(store.db.connection_string());
    for i in 0..5 {
        store
            .post_event(&event("github", &format!("e-{i}"), b"{}"))
            .await;
    }
    assert_eq!(drain(&relay).await, 5);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(
        *open_during_call.lock().unwrap(),
        [0],
        "a transaction was open during the call"
    );
    assert_eq!(count(&store.db, "SELECT count(*) FROM outbox").await, 0);
}

async fn test_support_connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn an_event_the_dispatcher_refuses_on_its_own_is_set_aside_and_the_others_are_delivered() {
    let (url, seen) = stand_in("poison", |_| Box::pin(async {})).await;
    let (store, relay) = spawn_store_relaying_to(&url, 100).await;
    for uuid in ["a", "b", "poison", "c", "d"] {
        store.post_event(&event("github", uuid, b"{}")).await;
    }

    assert_eq!(drain(&relay).await, 5);

    // The batch, then each on its own; the refused one is never sent again.
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls[0].len(), 5);
    assert!(calls[1..].iter().all(|c| c.len() == 1), "{calls:?}");
    let accepted: Vec<&String> = calls[1..]
        .iter()
        .flatten()
        .filter(|u| *u != "poison")
        .collect();
    assert_eq!(accepted, ["a", "b", "c", "d"]);
    assert_eq!(drain(&relay).await, 0);
    assert_eq!(seen.lock().unwrap().len(), calls.len(), "nothing resent");
    assert_eq!(count(&store.db, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(
        count(
            &store.db,
            "SELECT count(*) FROM outbox_refused WHERE status = 400 AND answer LIKE '%refused%'"
        )
        .await,
        1
    );
    // Set aside, not lost: the event itself is still stored.
    assert_eq!(count(&store.db, "SELECT count(*) FROM events").await, 5);
}
