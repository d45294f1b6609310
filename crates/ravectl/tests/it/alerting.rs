//! Alerting in the local stack: Alertmanager's configuration is what amtool
//! accepts, and with --alerts-as-tasks a critical alert reaches people (the
//! inbox) and becomes an `sre` task through ingest's alertmanager source.

use std::time::{Duration, Instant};

use super::{free_port, up_with};

#[tokio::test]
async fn with_alerts_as_tasks_a_critical_alert_reaches_the_inbox_and_becomes_one_sre_task() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ports = [0; 15].map(|_| free_port());
    let _stack = up_with(
        &state,
        ports,
        &[
            "--alerts-as-tasks",
            "--alert-group-wait",
            "1s",
            "--alert-group-interval",
            "1s",
        ],
    );
    let config = state.join("config/alertmanager.yml");
    ravectl::up::check_alertmanager_config(&config).expect("amtool accepts the rendered config");

    let http = reqwest::Client::new();
    let alertmanager = format!("http://127.0.0.1:{}", ports[12]);
    let now = time::OffsetDateTime::now_utc();
    let at = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let alert = serde_json::json!([{
        "labels": { "alertname": "RaveOutboxBacklog", "severity": "critical", "service": "dedup-store", "job": "dedup-store" },
        "annotations": { "summary": "Stored events are not becoming tasks." },
        "startsAt": at(now),
        "endsAt": at(now + time::Duration::minutes(10)),
    }]);
    // Alertmanager's own resends of the same notification change nothing.
    for _ in 0..2 {
        let answer = http
            .post(format!("{alertmanager}/api/v2/alerts"))
            .json(&alert)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    }

    let operator = std::fs::read_to_string(state.join("secrets/operator.token")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let tasks = loop {
        let listed: serde_json::Value = http
            .get(format!("http://127.0.0.1:{}/v1/tasks?kind=sre", ports[3]))
            .bearer_auth(operator.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tasks = listed["tasks"].as_array().cloned().unwrap_or_default();
        let inbox = std::fs::read_to_string(state.join("logs/alerts.jsonl")).unwrap_or_default();
        if !tasks.is_empty() && inbox.contains("RaveOutboxBacklog") {
            break tasks;
        }
        assert!(
            Instant::now() < deadline,
            "no sre task and inbox entry within 60 s: {listed}\n{inbox}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["kind"], "sre");
}
