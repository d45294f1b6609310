use test_support::trace::{random_trace_id, traceparent};

use crate::helpers::{send, spawn_stack};

#[tokio::test]
async fn a_senders_traceparent_is_not_the_stored_trace_the_receipt_names_rave_s_own() {
    let stack = spawn_stack().await;
    let senders = random_trace_id();
    let request = stack
        .github("traced-1", b"{}")
        .header("traceparent", traceparent(&senders))
        .header("tracestate", "vendor=chosen");
    let (status, receipt) = send(request).await;
    assert_eq!(status, 202);
    let db = stack.db.connect().await.unwrap();
    let stored: Option<String> = db
        .query_one(
            "SELECT trace_id FROM events WHERE event_uuid = 'traced-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let stored = stored.expect("a stored trace id");
    assert_ne!(stored, senders, "the sender chose no stored trace id");
    assert_eq!(stored.len(), 32);
    assert_eq!(
        receipt["trace_id"], stored,
        "the receipt names the stored trace"
    );
}

#[tokio::test]
async fn a_request_without_traceparent_still_gets_a_trace_id_that_reaches_the_store() {
    let stack = spawn_stack().await;
    let (status, _) = send(stack.github("untraced", b"{}")).await;
    assert_eq!(status, 202);
    let db = stack.db.connect().await.unwrap();
    let stored: Option<String> = db
        .query_one(
            "SELECT trace_id FROM events WHERE event_uuid = 'untraced'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.map(|t| t.len()), Some(32));
}

#[tokio::test]
async fn metrics_have_the_seed_names_and_the_latency_histogram_carries_trace_exemplars() {
    let stack = spawn_stack().await;
    let (_, receipt) = send(
        stack
            .github("m-1", b"{}")
            .header("traceparent", traceparent(&random_trace_id())),
    )
    .await;
    let trace_id = receipt["trace_id"].as_str().unwrap().to_owned();
    send(stack.github("m-2", b"{}").body("tampered")).await;

    let text = stack.metrics().await;
    for name in [
        "webhook_requests_total",
        "webhook_errors_total",
        "webhook_duration_seconds_bucket",
        "webhook_events_processed_total",
        "webhook_events_deduplicated_total",
        "webhook_dispatcher_uptime_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(!text.contains("task_id="), "no unbounded labels");
    assert!(
        text.contains("webhook_events_processed_total{source=\"gitlab\"} 0"),
        "configured sources start at 0"
    );
    assert!(
        !text.contains("# {"),
        "no exemplars in Prometheus text 0.0.4"
    );

    let open = test_support::metrics::scrape_openmetrics(&stack.http, &stack.ingest)
        .await
        .text()
        .await
        .unwrap();
    assert!(open.trim_end().ends_with("# EOF"));
    let exemplar = format!("# {{trace_id=\"{trace_id}\"}}");
    assert!(
        open.lines()
            .any(|l| l.starts_with("webhook_duration_seconds_bucket") && l.contains(&exemplar)),
        "no exemplar for {trace_id} in:\n{open}"
    );
}
