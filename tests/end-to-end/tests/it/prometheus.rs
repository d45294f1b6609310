//! A real Prometheus scraping ingest (OpenMetrics, exemplars on) and the
//! Pushgateway (`honor_labels`).

use std::time::Duration;

use test_support::pg::PgCluster;
use test_support::prometheus::Prometheus;
use test_support::pushgateway::Pushgateway;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_keeps_the_trace_id_of_a_webhook_as_an_exemplar_and_scrapes_agent_metrics() {
    let _exclusive = exclusive().await;
    telemetry();
    let cluster = PgCluster::shared();
    let mut store: dedup_store::Settings = defaults();
    store.ingest_tokens = vec![rave_service::settings::Secret::new(
        test_support::INGEST_TOKEN,
    )];
    store.server.port = 0;
    store.database = cluster.create_database().await.unwrap().settings();
    let app = dedup_store::Application::build(store).await.unwrap();
    let store_url = serve(app.port(), app.run_until_stopped()).await;
    let (ingest_port, ingest_url) = github_ingest(store_url).await;

    let gateway = Pushgateway::start().await.unwrap();
    let mut reporter: agent_reporter::Settings = defaults();
    reporter.server.port = 0;
    reporter.database = cluster.create_database().await.unwrap().settings();
    reporter.agents = vec![agent()];
    reporter.pushgateway.url = Some(gateway.url.clone());
    let app = agent_reporter::Application::build_with(
        reporter,
        std::sync::Arc::new(rave_service::clock::SystemClock),
        false,
    )
    .await
    .unwrap();
    let pusher = app.pusher().unwrap();
    let reporter_url = serve(app.port(), app.run_until_stopped()).await;

    let gateway_target = gateway.url.trim_start_matches("http://");
    let prometheus = Prometheus::start(&format!(
        "  - job_name: ingest\n    static_configs:\n      - targets: ['127.0.0.1:{ingest_port}']\n\
         \x20 - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: ['{gateway_target}']\n"
    ))
    .await
    .unwrap();

    let senders = test_support::trace::random_trace_id();
    let sent = github_webhook(
        &ingest_url,
        "exemplar-delivery",
        Some(&test_support::trace::traceparent(&senders)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(sent.status(), 202);
    let receipt: serde_json::Value = sent.json().await.unwrap();
    let trace_id = receipt["trace_id"].as_str().expect("a trace id").to_owned();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let query = format!(
        "/api/v1/query_exemplars?query=webhook_duration_seconds_bucket&start={}&end={}",
        now - 600,
        now + 600
    );
    prometheus
        .poll(&query, Duration::from_secs(30), |answer| {
            answer.to_string().contains(&trace_id)
        })
        .await
        .expect("the webhook's trace id is kept as an exemplar");

    // An agent's report reaches Prometheus through the Pushgateway.
    let report = serde_json::json!({
        "task_id": rave_service::ids::TaskId::generate(),
        "kind": "webhook",
        "status": "succeeded",
        "started_at": "2026-11-27T10:00:00Z",
        "duration_seconds": 2.5,
    });
    let accepted = reqwest::Client::new()
        .post(format!("{reporter_url}/v1/reports"))
        .bearer_auth(AGENT_TOKEN)
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    assert_eq!(pusher.push_once().await.unwrap().pushed, 1);
    let answer = prometheus
        .poll(
            "/api/v1/query?query=agent_jobs_total%7Bagent%3D%22e2e%22%2Cstatus%3D%22succeeded%22%7D",
            Duration::from_secs(30),
            |a| a["data"]["result"].as_array().is_some_and(|r| !r.is_empty()),
        )
        .await
        .unwrap();
    let series = &answer["data"]["result"][0];
    assert_eq!(
        series["metric"]["job"], "rave_agents",
        "honor_labels keeps the pushed job label"
    );
    assert_eq!(series["metric"]["kind"], "webhook");
    assert_eq!(series["value"][1], "1");
}
