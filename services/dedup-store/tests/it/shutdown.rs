use tokio::task::JoinSet;

use crate::helpers::{event, sample, spawn_store};

#[tokio::test]
async fn a_graceful_stop_finishes_every_insert_already_in_flight() {
    let store = spawn_store().await;
    // Hold inserts inside their transactions, as a slow disk would.
    let mut admin = store.db.connect_as_superuser().await.unwrap();
    let lock = admin.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let mut requests = JoinSet::new();
    for i in 0..20 {
        let http = store.http.clone();
        let url = format!("{}/v1/events", store.address);
        let body = event("github", &format!("in-flight-{i}"), b"{}");
        requests.spawn(async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    // Wait for the condition, not for time: all 20 are inside the store.
    while sample(&store.metrics_text().await, "dedup_inserts_in_flight") < 20.0 {
        tokio::task::yield_now().await;
    }

    let stop = tokio::spawn(store.handle.clone().stop(true));
    lock.commit().await.unwrap();

    let mut statuses = Vec::new();
    while let Some(result) = requests.join_next().await {
        statuses.push(result.unwrap().expect("in-flight request answered"));
    }
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    stop.await.unwrap();
    store.stopped.await.unwrap().unwrap();

    let db = store.db.connect().await.unwrap();
    let events: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 20);
    assert!(
        store
            .http
            .get(format!("{}/healthz", store.address))
            .send()
            .await
            .is_err(),
        "the stopped server accepts no new requests"
    );
}
