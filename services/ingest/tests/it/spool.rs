//! The store-outage spool: acknowledged while dedup-store is down, replayed
//! in order once it is back, deduplicated, bounded, and kept across restarts.

use test_support::pg::{PgCluster, TestDatabase};
use test_support::sign;

use crate::helpers::{TestStack, ingest_settings, sample, send};

use test_support::free_port;

struct Outage {
    stack: TestStack,
    app: Option<ingest::startup::Application>,
    replayer: ingest::spool::Replayer,
    store_port: u16,
    spool_dir: tempfile::TempDir,
}

async fn ingest_with_store_down(adjust: impl FnOnce(&mut ingest::Settings)) -> Outage {
    rave_service::telemetry::init_for_tests();
    let db = PgCluster::shared().create_database().await.unwrap();
    let store_port = free_port();
    let spool_dir = tempfile::tempdir().unwrap();
    let standard = sign::new_whsec();
    let gitlab = sign::new_whsec();
    let mut settings = ingest_settings(
        &format!("http://127.0.0.1:{store_port}"),
        &standard,
        &gitlab,
    );
    settings.spool.dir = Some(spool_dir.path().join("spool"));
    settings.store.timeout_ms = 2000;
    adjust(&mut settings);
    let app = ingest::Application::build_with(settings, false)
        .await
        .unwrap();
    let replayer = app.replayer().expect("a spool is configured");
    Outage {
        stack: TestStack {
            ingest: format!("http://127.0.0.1:{}", app.port()),
            store: format!("http://127.0.0.1:{store_port}"),
            db,
            http: reqwest::Client::new(),
            standard_secret: standard,
            gitlab_signing_secret: gitlab,
        },
        app: Some(app),
        replayer,
        store_port,
        spool_dir,
    }
}

impl Outage {
    fn serve(&mut self) {
        tokio::spawn(self.app.take().unwrap().run_until_stopped());
    }

    async fn start_store(&self) {
        start_store_on(&self.stack.db, self.store_port).await;
    }

    /// Settings for another ingest with this one's store and secrets, its
    /// spool in `spool_dir`.
    fn another_ingest(&self, spool_dir: std::path::PathBuf) -> ingest::Settings {
        let mut settings = ingest_settings(
            &self.stack.store,
            &self.stack.standard_secret,
            &self.stack.gitlab_signing_secret,
        );
        settings.spool.dir = Some(spool_dir);
        settings
    }
}

async fn start_store_on(db: &TestDatabase, port: u16) {
    let mut settings: dedup_store::Settings =
        rave_service::settings::load_with_env(None, Some(test_support::test_env())).unwrap();
    settings.ingest_tokens = vec![rave_service::settings::Secret::new(
        test_support::INGEST_TOKEN,
    )];
    settings.server.port = port;
    settings.server.workers = 1;
    settings.database = db.settings();
    let app = dedup_store::Application::build(settings).await.unwrap();
    tokio::spawn(app.run_until_stopped());
}

async fn stored_deliveries(db: &TestDatabase) -> Vec<String> {
    let client = db.connect().await.unwrap();
    client
        .query("SELECT event_uuid FROM events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn deliveries_during_a_store_outage_are_acknowledged_then_stored_in_order_once_it_is_back() {
    let mut outage = ingest_with_store_down(|_| {}).await;
    outage.serve();
    let stack = &outage.stack;
    for delivery in ["d-1", "d-2", "d-3", "d-2"] {
        let (status, receipt) =
            send(stack.github(delivery, format!("{{\"d\":\"{delivery}\"}}").as_bytes())).await;
        assert_eq!(
            (status, receipt["status"].as_str()),
            (202, Some("spooled")),
            "{receipt}"
        );
        assert_eq!(receipt["delivery_id"], delivery);
    }
    let metrics = stack.metrics().await;
    assert_eq!(sample(&metrics, "ingest_spool_depth_events"), 4.0);
    assert_eq!(sample(&metrics, "ingest_spooled_events_total"), 4.0);
    assert!(sample(&metrics, "ingest_spool_oldest_age_seconds") >= 0.0);

    // Still down: nothing moves, nothing is lost.
    assert_eq!(outage.replayer.step().await.unwrap(), 0);
    assert_eq!(outage.replayer.spool.depth().events, 4);

    outage.start_store().await;
    assert_eq!(outage.replayer.step().await.unwrap(), 4);
    assert_eq!(stored_deliveries(&stack.db).await, ["d-1", "d-2", "d-3"]);
    let metrics = stack.metrics().await;
    assert_eq!(sample(&metrics, "ingest_spool_depth_events"), 0.0);
    assert_eq!(sample(&metrics, "ingest_spool_replayed_events_total"), 4.0);
    assert_eq!(sample(&metrics, "ingest_spool_oldest_age_seconds"), 0.0);

    // With the spool empty and the store up, deliveries go straight through.
    let (status, receipt) = send(stack.github("d-4", b"{}")).await;
    assert_eq!(
        (status, receipt["status"].as_str()),
        (202, Some("accepted"))
    );
    let (status, receipt) = send(stack.github("d-1", b"{\"d\":\"d-1\"}")).await;
    assert_eq!(
        (status, receipt["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(
        stored_deliveries(&stack.db).await,
        ["d-1", "d-2", "d-3", "d-4"]
    );
}

#[tokio::test]
async fn a_full_spool_answers_503_with_retry_after_and_keeps_what_it_holds() {
    let mut outage = ingest_with_store_down(|s| {
        s.limits.max_body_bytes = 1000;
        s.spool.max_bytes = 2000;
    })
    .await;
    outage.serve();
    let body = vec![b'x'; 500];
    let mut statuses = Vec::new();
    for i in 0..4 {
        let response = outage
            .stack
            .github(&format!("big-{i}"), &body)
            .send()
            .await
            .unwrap();
        statuses.push((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ));
        if response.status() == 503 {
            let answer: serde_json::Value = response.json().await.unwrap();
            assert_eq!(answer["error"]["code"], "store_unavailable");
        }
    }
    // Each spooled request holds ~1 KB (base64 body plus headers).
    assert_eq!(statuses[0], (202, None));
    assert_eq!(statuses[3], (503, Some("5".to_owned())));
    let spooled = statuses.iter().filter(|(s, _)| *s == 202).count() as u64;
    outage.start_store().await;
    assert_eq!(outage.replayer.step().await.unwrap(), spooled);
    assert_eq!(
        stored_deliveries(&outage.stack.db).await.len() as u64,
        spooled
    );
}

#[tokio::test]
async fn spooled_deliveries_survive_an_ingest_restart() {
    let mut outage = ingest_with_store_down(|_| {}).await;
    let app = outage.app.take().unwrap();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let (status, _) = send(outage.stack.github("before-restart", b"{}")).await;
    assert_eq!(status, 202);
    handle.stop(true).await;
    server.await.unwrap().unwrap();

    // A new ingest on the same spool directory, with the store back, once
    // the old one has let go of its spool, as an exited process has: its
    // server's last worker threads may still hold it for a moment after
    // the server stopped (a new ingest would then start on its handover
    // slot instead, and adopt this one later).
    let settings = outage.another_ingest(outage.spool_dir.path().join("spool"));
    let old_spool = std::sync::Arc::downgrade(&outage.replayer.spool);
    drop(outage.replayer);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while old_spool.strong_count() > 0 && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        std::thread::yield_now();
    }
    assert_eq!(
        old_spool.strong_count(),
        0,
        "the old ingest still holds its spool"
    );
    let app = ingest::Application::build_with(settings, false)
        .await
        .unwrap();
    let replayer = app.replayer().unwrap();
    assert_eq!(replayer.spool.depth().events, 1);
    start_store_on(&outage.stack.db, outage.store_port).await;
    assert_eq!(replayer.step().await.unwrap(), 1);
    assert_eq!(
        stored_deliveries(&outage.stack.db).await,
        ["before-restart"]
    );
}

#[tokio::test]
async fn a_replica_replays_the_spool_of_a_peer_that_is_gone_but_not_of_one_that_runs() {
    let mut outage = ingest_with_store_down(|_| {}).await;
    let app = outage.app.take().unwrap();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let (status, _) = send(outage.stack.github("acknowledged-by-a", b"{}")).await;
    assert_eq!(status, 202);
    let peer_dir = outage.spool_dir.path().join("spool");

    // Replica B, with the store back, lists A's spool as a peer's.
    start_store_on(&outage.stack.db, outage.store_port).await;
    let own = tempfile::tempdir().unwrap();
    let mut settings = outage.another_ingest(own.path().join("spool"));
    settings.spool.peer_dirs = vec![peer_dir.clone()];
    let b = ingest::Application::build_with(settings, false)
        .await
        .unwrap();
    let b_url = format!("http://127.0.0.1:{}", b.port());
    let b_replayer = b.replayer().unwrap();
    tokio::spawn(b.run_until_stopped());
    assert_eq!(
        b_replayer.adopt_step().await.unwrap(),
        0,
        "A runs and owns its spool"
    );
    assert!(stored_deliveries(&outage.stack.db).await.is_empty());

    // A goes away with its event still spooled; B delivers it.
    handle.stop(true).await;
    server.await.unwrap().unwrap();
    drop(outage.replayer);
    assert_eq!(b_replayer.adopt_step().await.unwrap(), 1);
    assert_eq!(
        stored_deliveries(&outage.stack.db).await,
        ["acknowledged-by-a"]
    );
    assert_eq!(b_replayer.adopt_step().await.unwrap(), 0, "nothing twice");
    let metrics = reqwest::get(format!("{b_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sample(&metrics, "ingest_spool_adopted_events_total"), 1.0);

    // A restarting on its directory gets it back, empty, and owns it again.
    let spool = ingest::spool::Spool::open(&peer_dir, 1 << 20).expect("A's lock is free again");
    assert!(spool.is_empty());
    spool
        .append(b"{}", time::OffsetDateTime::now_utc())
        .unwrap();
    assert!(
        ingest::spool::Spool::try_adopt(&peer_dir)
            .unwrap()
            .is_none(),
        "a spool with events is not adopted while its owner holds it"
    );
}

#[tokio::test]
async fn a_store_replica_refusing_connections_is_passed_over_for_the_next() {
    let live = free_port();
    let mut outage = ingest_with_store_down(|s| {
        s.store.fallback_urls = vec![format!("http://127.0.0.1:{live}")];
    })
    .await;
    start_store_on(&outage.stack.db, live).await;
    outage.serve();
    let (status, body) = send(outage.stack.github("via-the-second-replica", b"{}")).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("accepted")));
    assert!(outage.replayer.spool.is_empty(), "stored, not spooled");
    assert_eq!(
        stored_deliveries(&outage.stack.db).await,
        ["via-the-second-replica"]
    );
}

/// Guards a wait that the code under test must end; a hang is the bug.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting: {what}"))
}

#[tokio::test]
async fn a_slow_fsync_under_the_spool_blocks_no_request_handler() {
    // One worker thread: a handler blocked on the disk would block them all.
    let mut outage = ingest_with_store_down(|s| s.server.workers = 1).await;
    let (entered, syncing) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    outage.replayer.spool.before_each_sync(move || {
        let _ = entered.send(());
        // Until the test lets go (or is gone).
        let _ = released.lock().unwrap().recv();
    });
    outage.serve();
    let slow = tokio::spawn(send(outage.stack.github("slow-disk", b"{}")));
    within(
        "the append to reach its fsync",
        tokio::task::spawn_blocking(move || syncing.recv()),
    )
    .await
    .unwrap()
    .unwrap();

    // The fsync holds the spool's lock; the one worker still answers,
    // /metrics included, which reads the spool's depth.
    let metrics = within("/metrics during the fsync", outage.stack.metrics()).await;
    assert_eq!(sample(&metrics, "ingest_spool_depth_events"), 0.0);
    let (status, _) = within(
        "/healthz during the fsync",
        send(
            outage
                .stack
                .http
                .get(format!("{}/healthz", outage.stack.ingest)),
        ),
    )
    .await;
    assert_eq!(status, 200);
    drop(release);
    let (status, receipt) = slow.await.unwrap();
    assert_eq!((status, receipt["status"].as_str()), (202, Some("spooled")));
}

#[tokio::test]
async fn the_spool_empties_and_deliveries_go_straight_through_again_even_under_steady_load() {
    let mut outage = ingest_with_store_down(|_| {}).await;
    outage.serve();
    for i in 0..40 {
        let (status, _) = send(outage.stack.github(&format!("backlog-{i}"), b"{}")).await;
        assert_eq!(status, 202);
    }
    outage.start_store().await;

    // Eight senders, each one delivery after another, while the backlog
    // is replayed: together faster than one-at-a-time replay.
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..8 {
        let stack = TestStack {
            ingest: outage.stack.ingest.clone(),
            store: outage.stack.store.clone(),
            db: outage.stack.db.clone(),
            http: reqwest::Client::new(),
            standard_secret: String::new(),
            gitlab_signing_secret: String::new(),
        };
        senders.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..40 {
                let (status, receipt) =
                    send(stack.github(&format!("load-{sender}-{i}"), b"{}")).await;
                assert_eq!(status, 202, "{receipt}");
                outcomes.push(receipt["status"].as_str().unwrap().to_owned());
            }
            outcomes
        });
    }
    let replaying = outage.replayer.step();
    let (replayed, outcomes) = tokio::join!(replaying, async {
        let mut all = Vec::new();
        while let Some(outcomes) = senders.join_next().await {
            all.push(outcomes.unwrap());
        }
        all
    });
    assert!(replayed.unwrap() >= 40);
    outage.replayer.step().await.unwrap(); // whatever raced in at the end
    assert!(outage.replayer.spool.is_empty());
    for outcomes in &outcomes {
        assert_eq!(
            outcomes.last().map(String::as_str),
            Some("accepted"),
            "every sender ends up going straight through: {outcomes:?}"
        );
    }
    // Every sender's deliveries are stored in the order it made them.
    let stored = stored_deliveries(&outage.stack.db).await;
    assert_eq!(stored.len(), 40 + 8 * 40);
    for sender in 0..8 {
        let mine: Vec<&String> = stored
            .iter()
            .filter(|d| d.starts_with(&format!("load-{sender}-")))
            .collect();
        let expected: Vec<String> = (0..40).map(|i| format!("load-{sender}-{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_stopping_ingest_leaves_its_spool_to_the_next_process_instead_of_replaying_it_first() {
    let mut outage = ingest_with_store_down(|_| {}).await;
    outage.serve();
    for i in 0..100 {
        send(outage.stack.github(&format!("left-{i}"), b"{}")).await;
    }
    outage.start_store().await;
    let (_stop, stopped) = tokio::sync::watch::channel(true);
    within(
        "the replayer to see the stop",
        outage
            .replayer
            .clone()
            .run(std::time::Duration::from_secs(3600), stopped),
    )
    .await;
    assert_eq!(outage.replayer.spool.depth().events, 100);
}
