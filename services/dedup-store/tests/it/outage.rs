use crate::helpers::{error_code, event, sample, spawn_store};

#[tokio::test]
async fn when_postgres_is_unreachable_inserts_get_503_with_retry_after_and_succeed_once_it_is_back()
{
    let store = spawn_store().await;
    assert_eq!(store.get("/readyz").await.status(), 200);

    store.db.cut_off().await.unwrap();
    let response = store
        .post_event(&event("github", "during-outage", b"{}"))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(error_code(response).await, "store_unavailable");
    assert_eq!(store.get("/readyz").await.status(), 503);
    assert_eq!(
        store.get("/healthz").await.status(),
        200,
        "alive even when not ready"
    );

    store.db.restore().await.unwrap();
    let response = store
        .post_event(&event("github", "during-outage", b"{}"))
        .await;
    assert_eq!(response.status(), 201, "the retried delivery is stored");
    let metrics = store.metrics_text().await;
    assert!(sample(&metrics, "dedup_commit_failures_total") >= 1.0);
    assert_eq!(
        sample(
            &metrics,
            "dedup_requests_rejected_total{reason=\"store_unavailable\"}"
        ),
        1.0
    );
}
