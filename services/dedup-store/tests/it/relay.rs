use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dedup_store::metrics::Metrics;
use dedup_store::relay::Relay;
use rave_service::settings::Secret;
use task_dispatcher::auth::token_digest;
use test_support::pg::{PgCluster, TestDatabase};

use crate::helpers::{event, sample, settings_for, spawn_with};

pub const RELAY_TOKEN: &str = "relay-test-token";

/// A task-dispatcher on its own database that routes every event to a task.
pub async fn spawn_dispatcher(db: &TestDatabase) -> (String, rave_service::served::StopHandle) {
    let mut settings: task_dispatcher::Settings =
        rave_service::settings::load_with_env(None, Some(HashMap::new())).unwrap();
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.database = db.settings();
    settings.routes = toml::from_str::<toml::Table>("kind = \"webhook\"")
        .map(|t| vec![t.try_into().unwrap()])
        .unwrap();
    settings.relay_tokens_sha256 = vec![hex::encode(token_digest(RELAY_TOKEN))];
    let app = task_dispatcher::Application::build_with(
        settings,
        Arc::new(task_dispatcher::clock::SystemClock),
        false,
    )
    .await
    .unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    (url, handle)
}

pub async fn count(db: &TestDatabase, sql: &str) -> i64 {
    db.scalar(sql).await
}

/// The store (relay not running by itself) pointed at `dispatcher_url`.
pub async fn spawn_store_relaying_to(
    dispatcher_url: &str,
    batch_size: i64,
) -> (crate::helpers::TestStore, Relay) {
    let db = PgCluster::shared().create_database().await.unwrap();
    let mut settings = settings_for(&db).await;
    settings.relay.dispatcher_url = Some(dispatcher_url.to_owned());
    settings.relay.token = Some(Secret::new(RELAY_TOKEN));
    settings.relay.batch_size = batch_size;
    let relay = relay_for(&settings);
    let store = spawn_with(db, settings).await;
    (store, relay)
}

/// A relay the test drives, over `settings`' database and relay settings.
fn relay_for(settings: &dedup_store::Settings) -> Relay {
    let pool = rave_pg::pool(&settings.database, "relay-test").unwrap();
    Relay::new(pool, &settings.relay, Arc::new(Metrics::new()))
        .unwrap()
        .unwrap()
}

pub async fn drain(relay: &Relay) -> usize {
    let mut total = 0;
    loop {
        match relay.relay_once().await.unwrap() {
            0 => return total,
            n => total += n,
        }
    }
}

#[tokio::test]
async fn every_stored_event_becomes_exactly_one_task_through_the_relay() {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (dispatcher, _) = spawn_dispatcher(&dispatcher_db).await;
    let (store, relay) = spawn_store_relaying_to(&dispatcher, 100).await;
    let mut task_ids = HashSet::new();
    for i in 0..250 {
        let answer: serde_json::Value = store
            .post_event(&event("github", &format!("e-{i}"), b"{}"))
            .await
            .json()
            .await
            .unwrap();
        task_ids.insert(answer["task_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(drain(&relay).await, 250, "three batches of at most 100");
    assert_eq!(count(&store.db, "SELECT count(*) FROM outbox").await, 0);

    let db = dispatcher_db.connect().await.unwrap();
    let stored: HashSet<String> = db
        .query("SELECT task_id FROM tasks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, task_ids, "each event's task carries its task_id");
}

#[tokio::test]
async fn a_stopping_relay_ends_after_its_current_batch_instead_of_emptying_the_outbox() {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (dispatcher, _) = spawn_dispatcher(&dispatcher_db).await;
    let (store, relay) = spawn_store_relaying_to(&dispatcher, 10).await;
    for i in 0..50 {
        store
            .post_event(&event("github", &format!("s-{i}"), b"{}"))
            .await;
    }
    let (stop, stopped) = tokio::sync::watch::channel(true);
    relay
        .run(Arc::new(tokio::sync::Notify::new()), stopped)
        .await;
    drop(stop);
    assert_eq!(
        count(&store.db, "SELECT count(*) FROM outbox").await,
        40,
        "one batch relayed; the rest waits for the next process"
    );
}

#[tokio::test]
async fn a_batch_redelivered_after_a_lost_acknowledgement_creates_nothing_twice() {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (dispatcher, _) = spawn_dispatcher(&dispatcher_db).await;
    let (store, relay) = spawn_store_relaying_to(&dispatcher, 100).await;
    for i in 0..10 {
        store
            .post_event(&event("github", &format!("e-{i}"), b"{}"))
            .await;
    }
    assert_eq!(drain(&relay).await, 10);
    // The relay died after the dispatcher's 2xx but before its delete
    // committed: the rows come back.
    let db = store.db.connect_as_superuser().await.unwrap();
    db.batch_execute("INSERT INTO outbox (event_id, task_id) SELECT id, task_id FROM events")
        .await
        .unwrap();
    assert_eq!(drain(&relay).await, 10, "redelivered");
    assert_eq!(
        count(&dispatcher_db, "SELECT count(*) FROM tasks").await,
        10
    );
    assert_eq!(
        count(&dispatcher_db, "SELECT count(DISTINCT task_id) FROM tasks").await,
        10
    );
}

#[tokio::test]
async fn while_the_dispatcher_is_down_events_wait_in_the_outbox_and_arrive_once_it_is_back() {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (dispatcher, handle) = spawn_dispatcher(&dispatcher_db).await;
    handle.stop(false).await;
    let (store, relay) = spawn_store_relaying_to(&dispatcher, 100).await;
    for i in 0..5 {
        store
            .post_event(&event("gitlab", &format!("e-{i}"), b"{}"))
            .await;
    }
    assert!(relay.relay_once().await.is_err(), "nobody answers");
    assert_eq!(
        count(&store.db, "SELECT count(*) FROM outbox").await,
        5,
        "nothing lost, nothing marked sent"
    );

    // The dispatcher restarts (on a new port) over the same database.
    let (restarted, _) = spawn_dispatcher(&dispatcher_db).await;
    let mut settings = settings_for(&store.db).await;
    settings.relay.dispatcher_url = Some(restarted);
    settings.relay.token = Some(Secret::new(RELAY_TOKEN));
    let relay_again = relay_for(&settings);
    assert_eq!(drain(&relay_again).await, 5);
    assert_eq!(count(&dispatcher_db, "SELECT count(*) FROM tasks").await, 5);
    assert_eq!(count(&store.db, "SELECT count(*) FROM outbox").await, 0);
}

#[tokio::test]
async fn a_relay_with_the_wrong_token_is_refused_and_keeps_its_events() {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (dispatcher, _) = spawn_dispatcher(&dispatcher_db).await;
    let db = PgCluster::shared().create_database().await.unwrap();
    let mut settings = settings_for(&db).await;
    settings.relay.dispatcher_url = Some(dispatcher);
    settings.relay.token = Some(Secret::new("not-the-relay-token"));
    let store = spawn_with(db, settings.clone()).await;
    store.post_event(&event("github", "x", b"{}")).await;
    let relay = relay_for(&settings);
    let err = relay.relay_once().await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(count(&store.db, "SELECT count(*) FROM outbox").await, 1);
    assert_eq!(
        sample(&store.metrics_text().await, "dedup_events_relayed_total"),
        0.0
    );
}

#[tokio::test]
async fn two_replicas_relaying_at_once_deliver_each_event_once() {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (dispatcher_a, _) = spawn_dispatcher(&dispatcher_db).await;
    let (dispatcher_b, _) = spawn_dispatcher(&dispatcher_db).await;
    let (store, relay_a) = spawn_store_relaying_to(&dispatcher_a, 25).await;
    let mut settings = settings_for(&store.db).await;
    settings.relay.dispatcher_url = Some(dispatcher_b);
    settings.relay.token = Some(Secret::new(RELAY_TOKEN));
    settings.relay.batch_size = 25;
    let relay_b = relay_for(&settings);
    for i in 0..400 {
        store
            .post_event(&event("github", &format!("e-{i}"), b"{}"))
            .await;
    }
    let (mut by_a, mut by_b) = (0, 0);
    loop {
        let (x, y) = tokio::join!(relay_a.relay_once(), relay_b.relay_once());
        let (x, y) = (x.unwrap(), y.unwrap());
        if x + y == 0 {
            break;
        }
        (by_a, by_b) = (by_a + x, by_b + y);
    }
    assert_eq!(by_a + by_b, 400, "no event sent by both replicas");
    assert!(by_a > 0 && by_b > 0, "both took part: {by_a} + {by_b}");
    assert_eq!(count(&store.db, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(
        count(&dispatcher_db, "SELECT count(DISTINCT task_id) FROM tasks").await,
        400
    );
}

#[tokio::test]
async fn a_dispatcher_replica_refusing_connections_is_passed_over_for_the_next() {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (stopped, handle) = spawn_dispatcher(&dispatcher_db).await;
    handle.stop(false).await;
    let (live, _) = spawn_dispatcher(&dispatcher_db).await;
    let db = PgCluster::shared().create_database().await.unwrap();
    let mut settings = settings_for(&db).await;
    settings.relay.dispatcher_url = Some(stopped);
    settings.relay.fallback_urls = vec![live];
    settings.relay.token = Some(Secret::new(RELAY_TOKEN));
    let store = spawn_with(db, settings.clone()).await;
    for i in 0..3 {
        store
            .post_event(&event("github", &format!("e-{i}"), b"{}"))
            .await;
    }
    let relay = relay_for(&settings);
    assert_eq!(drain(&relay).await, 3);
    assert_eq!(count(&dispatcher_db, "SELECT count(*) FROM tasks").await, 3);
}

#[tokio::test]
async fn the_outbox_gauges_show_what_waits_to_become_a_task_until_the_relay_delivers_it() {
    let dispatcher_db = PgCluster::shared().create_database().await.unwrap();
    let (dispatcher, _) = spawn_dispatcher(&dispatcher_db).await;
    let (store, relay) = spawn_store_relaying_to(&dispatcher, 100).await;
    let empty = store.metrics_text().await;
    assert_eq!(sample(&empty, "dedup_outbox_depth"), 0.0);
    assert_eq!(sample(&empty, "dedup_outbox_oldest_age_seconds"), 0.0);
    for i in 0..3 {
        store
            .post_event(&event("github", &format!("g-{i}"), b"{}"))
            .await;
    }
    // The oldest row was written a moment ago; backdate it as a stalled
    // relay would leave it, to read its age.
    let db = store.db.connect().await.unwrap();
    db.execute(
        "UPDATE outbox SET created_at = now() - interval '90 seconds' WHERE id = (SELECT min(id) FROM outbox)",
        &[],
    )
    .await
    .unwrap();
    let waiting = store.metrics_text().await;
    assert_eq!(sample(&waiting, "dedup_outbox_depth"), 3.0);
    let age = sample(&waiting, "dedup_outbox_oldest_age_seconds");
    assert!((90.0..120.0).contains(&age), "oldest age {age}");
    assert_eq!(drain(&relay).await, 3);
    let delivered = store.metrics_text().await;
    assert_eq!(sample(&delivered, "dedup_outbox_depth"), 0.0);
    assert_eq!(sample(&delivered, "dedup_outbox_oldest_age_seconds"), 0.0);
    assert_eq!(sample(&delivered, "dedup_outbox_refused"), 0.0);
}

/// The relay's claim through its generic plan: the tables it reads whole,
/// and how many rows it claims (rolled back).
async fn claim_seq_scans(db: &mut tokio_postgres::Client) -> (Vec<String>, u64) {
    test_support::pg::generic_plan_seq_scans(
        db,
        &format!(
            "PREPARE claim(int8, float8, text) AS {}",
            dedup_store::relay::CLAIM
        ),
        "claim(100, 30, 'test-relay')",
    )
    .await
}

#[tokio::test]
async fn the_relays_claim_planned_once_reads_only_the_rows_it_claims_however_the_outbox_looks() {
    let (store, _relay) = spawn_store_relaying_to("http://127.0.0.1:9", 100).await;
    let mut db = store.db.connect().await.unwrap();
    // A long outbox, as under sustained intake: 20,000 events waiting.
    db.batch_execute(
        "INSERT INTO events (source, event_uuid, event_type, task_id, received_at, headers, body)
         SELECT 'github', 'd-' || g, 'push', substr(md5(g::text), 1, 16), now(), '{}'::jsonb,
                convert_to(repeat('x', 512), 'UTF8')
         FROM generate_series(1, 20000) g;
         INSERT INTO outbox (event_id, task_id) SELECT id, task_id FROM events;
         ANALYZE events; ANALYZE outbox;",
    )
    .await
    .unwrap();
    let (seq, claimed) = claim_seq_scans(&mut db).await;
    assert!(seq.is_empty(), "a long outbox: whole tables read: {seq:?}");
    assert_eq!(claimed, 100, "a claim takes one batch");

    // A short outbox long with dead rows, as while a relay keeps up: the
    // statistics say 3 rows, the pages hold 20,000.
    db.batch_execute(
        "DELETE FROM outbox WHERE id > 3;
         ANALYZE outbox;",
    )
    .await
    .unwrap();
    let (seq, claimed) = claim_seq_scans(&mut db).await;
    assert!(
        seq.is_empty(),
        "a short outbox of dead rows: whole tables read: {seq:?}"
    );
    assert_eq!(claimed, 3);
}
