//! Retention: old events go in batches; undelivered ones, and sources kept
//! forever, stay; a deleted delivery is new again.

use std::sync::Arc;
use std::time::Duration;

use dedup_store::metrics::Metrics;
use dedup_store::retention::Retention;
use rave_service::ids::SourceName;
use rave_service::settings::ServiceSettings as _;
use test_support::pg::PgCluster;
use time::OffsetDateTime;

use crate::helpers::{event, settings_for, spawn_with};
use crate::relay::count;

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

#[tokio::test]
async fn events_past_their_sources_retention_are_deleted_in_batches_and_the_rest_stay() {
    let db = PgCluster::shared().create_database().await.unwrap();
    let mut settings = settings_for(&db).await;
    settings.retention.max_age_hours = 100;
    settings.retention.batch = 2;
    let source = |s: &str| SourceName::parse(s.to_owned()).unwrap();
    settings.retention.sources.insert(source("brief"), 72);
    settings.retention.sources.insert(source("keep"), 0);
    let pool = rave_pg::pool(&settings.database, "retention-test").unwrap();
    let metrics = Arc::new(Metrics::new());
    let retention = Retention::new(pool, settings.retention.clone(), metrics.clone());
    let store = spawn_with(db, settings).await;
    for (source, uuid) in [
        ("github", "g1"),
        ("github", "g2"),
        ("github", "g3"),
        ("brief", "b1"),
        ("brief", "b2"),
        ("keep", "k1"),
    ] {
        assert_eq!(
            store.post_event(&event(source, uuid, b"{}")).await.status(),
            201
        );
    }
    // Delivered, except b2 (still in the outbox); g3 was refused by the
    // dispatcher and set aside.
    let db = store.db.connect_as_superuser().await.unwrap();
    db.batch_execute(
        "INSERT INTO outbox_refused (event_id, task_id, status, answer)
             SELECT id, task_id, 400, 'refused' FROM events WHERE event_uuid = 'g3';
         DELETE FROM outbox WHERE event_id IN (SELECT id FROM events WHERE event_uuid <> 'b2');",
    )
    .await
    .unwrap();
    let now = OffsetDateTime::now_utc();

    assert_eq!(
        retention.prune_once(now + hours(80)).await.unwrap(),
        (1, false),
        "after 80 hours only b1 is past its source's 72; b2 is not yet delivered"
    );
    assert_eq!(
        retention.prune_once(now + hours(101)).await.unwrap(),
        (2, true),
        "github's three are past 100 hours: a batch of two, and more"
    );
    assert_eq!(
        retention.prune_once(now + hours(101)).await.unwrap(),
        (1, false)
    );
    assert_eq!(
        retention.prune_once(now + hours(10_000)).await.unwrap(),
        (0, false),
        "a source kept forever, and an undelivered event, stay however old"
    );
    let left: Vec<String> = db
        .query("SELECT event_uuid FROM events ORDER BY event_uuid", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["b2", "k1"]);
    assert_eq!(
        count(&store.db, "SELECT count(*) FROM outbox_refused").await,
        0,
        "g3's set-aside record went with it"
    );
    assert_eq!(metrics.deleted_by_retention.get(), 4);

    let again = store.post_event(&event("github", "g1", b"{}")).await;
    assert_eq!(
        again.status(),
        201,
        "past the retention a delivery is new again"
    );
}

#[tokio::test]
async fn a_retention_shorter_than_the_senders_redelivery_horizon_is_refused_at_start() {
    let db = PgCluster::shared().create_database().await.unwrap();
    let mut settings = settings_for(&db).await;
    settings.retention.max_age_hours = 24;
    let error = settings.validate().unwrap_err().to_string();
    assert!(
        error.contains("retention.max_age_hours") && error.contains("72"),
        "{error}"
    );

    let mut settings = settings_for(&db).await;
    settings
        .retention
        .sources
        .insert(SourceName::parse("gitlab".to_owned()).unwrap(), 1);
    let error = settings.validate().unwrap_err().to_string();
    assert!(error.contains("retention.sources.gitlab"), "{error}");

    let mut settings = settings_for(&db).await;
    settings.retention.max_age_hours = 0;
    assert!(settings.validate().is_ok(), "0 keeps events forever");
}
