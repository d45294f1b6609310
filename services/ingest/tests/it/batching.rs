//! Events go to dedup-store many per call; large ones, and every event to a
//! dedup-store without the batch route, one per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{
    TestStack, ingest_settings, sample, send, spawn_ingest, spawn_stack_with, spawn_store,
};

/// Sends every delivery at once; each one's status and receipt.
async fn deliver_all(stack: &TestStack, bodies: &[(String, Vec<u8>)]) -> Vec<(u16, Value)> {
    join_all(
        bodies
            .iter()
            .map(|(delivery, body)| send(stack.github(delivery, body))),
    )
    .await
}

#[tokio::test]
async fn small_events_go_to_dedup_store_in_batch_calls_and_large_ones_alone() {
    let stack = spawn_stack_with(|s| s.store.batch_max_event_bytes = 8192).await;
    let small = (0..30).map(|i| (format!("small-{i}"), format!("{{\"n\":{i}}}").into_bytes()));
    let large = (0..2).map(|i| (format!("large-{i}"), vec![b' '; 20_000]));
    let bodies: Vec<_> = small.chain(large).collect();

    let answers = deliver_all(&stack, &bodies).await;
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    assert_eq!(stack.stored_count().await, 32);
    let metrics = stack.metrics().await;
    // Every small event went through a batch call, and no large one did.
    assert_eq!(sample(&metrics, "ingest_store_batch_size_sum"), 30.0);
    assert!(sample(&metrics, "ingest_store_batch_size_count") <= 30.0);
}

/// A dedup-store from before the batch route: `POST /v1/events` only,
/// forwarded to a real one; every other path is 404.
struct OlderStore {
    real: String,
    calls: AtomicUsize,
    http: reqwest::Client,
}

async fn forward(req: HttpRequest, body: web::Bytes, older: web::Data<OlderStore>) -> HttpResponse {
    older.calls.fetch_add(1, Ordering::SeqCst);
    let mut request = older
        .http
        .post(format!("{}/v1/events", older.real))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for name in ["authorization", "traceparent"] {
        if let Some(value) = req.headers().get(name) {
            request = request.header(name, value.to_str().expect("ASCII"));
        }
    }
    let answer = request.send().await.expect("the real store answers");
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16()).expect("a status");
    HttpResponse::build(status)
        .content_type("application/json")
        .body(answer.bytes().await.expect("a body"))
}

#[tokio::test]
async fn a_dedup_store_without_the_batch_route_gets_every_event_in_its_own_call_and_trace() {
    rave_service::telemetry::init_for_tests();
    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .expect("test database");
    let older = web::Data::new(OlderStore {
        real: spawn_store(&db).await,
        calls: AtomicUsize::new(0),
        http: reqwest::Client::new(),
    });
    let shared = older.clone();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(shared.clone())
            .route("/v1/events", web::post().to(forward))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("a port");
    let url = format!("http://127.0.0.1:{}", server.addrs()[0].port());
    tokio::spawn(server.run());
    let settings = ingest_settings(
        &url,
        &test_support::sign::new_whsec(),
        &test_support::sign::new_whsec(),
    );
    let stack = TestStack {
        ingest: spawn_ingest(settings).await,
        store: older.real.clone(),
        db,
        http: reqwest::Client::new(),
        standard_secret: String::new(),
        gitlab_signing_secret: String::new(),
    };

    let bodies: Vec<_> = (0..10)
        .map(|i| (format!("older-{i}"), format!("{{\"n\":{i}}}").into_bytes()))
        .collect();
    let answers = deliver_all(&stack, &bodies).await;
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    assert_eq!(stack.stored_count().await, 10);
    assert_eq!(older.calls.load(Ordering::SeqCst), 10);
    // Each event is stored in its own webhook's trace, the one its receipt
    // names, not in a trace of the call that carried it.
    let client = stack.db.connect().await.unwrap();
    let stored: HashMap<String, String> = client
        .query("SELECT event_uuid, trace_id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get::<_, Option<String>>(1).expect("a trace id"),
            )
        })
        .collect();
    for ((delivery, _), (_, receipt)) in bodies.iter().zip(&answers) {
        assert_eq!(
            Some(&stored[delivery]),
            receipt["trace_id"].as_str().map(str::to_owned).as_ref(),
            "{delivery}"
        );
    }
}
