//! The reference agent against the network failing under it.

use base64::Engine as _;
use test_support::pg::PgCluster;

use crate::helpers::*;

fn agent_args(
    dispatcher_url: &str,
    reporter_url: &str,
    dir: &std::path::Path,
) -> ravectl::cli::AgentArgs {
    let token_file = dir.join("token");
    std::fs::write(&token_file, AGENT_TOKEN).unwrap();
    ravectl::cli::AgentArgs {
        url: Some(dispatcher_url.to_owned()),
        token_file: Some(token_file),
        reporter_url: Some(reporter_url.to_owned()),
        state_dir: dir.to_owned(),
        kinds: Vec::new(),
        command: None,
        simulate_ms: 10,
        wait_secs: 0,
        parallel: 1,
        max_tasks: None,
        exit_when_idle: true,
        otlp_endpoint: None,
        report_buffer_dir: None,
        report_buffer_bytes: 1 << 20,
    }
}

#[tokio::test]
async fn job_reports_the_reporter_could_not_take_wait_on_disk_and_are_delivered_once_it_can() {
    // Its services' and agent's spans go to the process's one exporter: not
    // while the trace test counts what reached it.
    let _exclusive = exclusive().await;
    let cluster = PgCluster::shared();
    let dispatcher_url = webhook_dispatcher(cluster).await;
    // Three tasks: their reports wait together, and go in one batch call.
    let events: Vec<serde_json::Value> = (0..3)
        .map(|n| {
            serde_json::json!({
                "task_id": rave_service::ids::TaskId::generate(),
                "source": "github",
                "event_uuid": format!("agent-report-delivery-{n}"),
                "event_type": "push",
                "received_at": "2026-12-01T10:00:00Z",
                "headers": {},
                "body_base64": base64::engine::general_purpose::STANDARD.encode(b"{}"),
            })
        })
        .collect();
    let handed = reqwest::Client::new()
        .post(format!("{dispatcher_url}/v1/internal/events"))
        .bearer_auth(RELAY_TOKEN)
        .json(&serde_json::json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(handed.status(), 200);

    // agent-reporter is down: nothing listens on its port yet.
    let reporter_port = test_support::free_port();
    let reporter_url = format!("http://127.0.0.1:{reporter_port}");
    let dir = tempfile::tempdir().unwrap();
    let args = agent_args(&dispatcher_url, &reporter_url, dir.path());
    assert_eq!(ravectl::agent::run(args).await.unwrap(), 0);
    let buffered = || {
        std::fs::read_dir(dir.path().join("agent-reports"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    };
    assert_eq!(buffered(), 3, "the jobs' reports wait on disk");

    // The reporter comes back; the agent's next idle moment delivers it.
    let reports_db = cluster.create_database().await.unwrap();
    let mut reporter: agent_reporter::Settings = defaults();
    reporter.server.port = reporter_port;
    reporter.database = reports_db.settings();
    reporter.agents = vec![agent()];
    let app = agent_reporter::Application::build(reporter).await.unwrap();
    serve(app.port(), app.run_until_stopped()).await;
    let args = agent_args(&dispatcher_url, &reporter_url, dir.path());
    assert_eq!(ravectl::agent::run(args).await.unwrap(), 0);
    assert_eq!(buffered(), 0);
    assert_eq!(reports_db.scalar("SELECT count(*) FROM reports").await, 3);
}
