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

fn up_args(extra: &[&str]) -> ravectl::cli::UpArgs {
    use clap::Parser as _;
    let cli = ravectl::cli::Cli::try_parse_from(["ravectl", "up"].iter().chain(extra)).unwrap();
    match cli.command {
        ravectl::cli::Command::Up(args) => args,
        _ => unreachable!(),
    }
}

#[test]
fn every_receiver_combination_renders_a_configuration_amtool_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let secrets = dir.path().join("it's secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("alertmanager.token"), "t0ken").unwrap();
    std::fs::write(&cert, "").unwrap();
    let mail = [
        "--alert-email-to",
        "ops@example.org",
        "--smtp-smarthost",
        "smtp.example.org:587",
        "--smtp-username",
        "rave",
        "--smtp-password-file",
        "/run/secrets/smtp password",
    ];
    let webhook = [
        "--alert-webhook-url",
        "https://hooks.example.org/rave?team='sre'",
    ];
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        webhook.to_vec(),
        mail.to_vec(),
        [&webhook[..], &mail[..], &["--alerts-as-tasks"]].concat(),
    ];
    for (i, extra) in cases.iter().enumerate() {
        let text = ravectl::up::alertmanager_config(
            &up_args(extra),
            "https://localhost:3002",
            &cert,
            &secrets,
        )
        .unwrap();
        let file = dir.path().join(format!("alertmanager-{i}.yml"));
        std::fs::write(&file, &text).unwrap();
        if let Err(e) = ravectl::up::check_alertmanager_config(&file) {
            panic!("{extra:?}: {e:#}\n{text}");
        }
        // People get every alert, whatever else is configured.
        assert!(text.contains("\"receiver\": \"people\""), "{text}");
        assert_eq!(
            text.contains("\"name\": \"rave\""),
            extra.contains(&"--alerts-as-tasks"),
            "{text}"
        );
        assert_eq!(
            text.contains("email_configs"),
            extra.contains(&"--alert-email-to"),
            "{text}"
        );
    }
    // A value cannot break out of its string: it stays one URL.
    let odd = up_args(&["--alert-webhook-url", "https://x/\"\nreceivers: []"]);
    let text =
        ravectl::up::alertmanager_config(&odd, "https://localhost:3002", &cert, &secrets).unwrap();
    let file = dir.path().join("odd.yml");
    std::fs::write(&file, &text).unwrap();
    assert_eq!(text.matches("\"receivers\"").count(), 1, "{text}");
    // amtool reads it as the one (invalid) URL it is.
    let refused = ravectl::up::check_alertmanager_config(&file).unwrap_err();
    assert!(
        format!("{refused:#}").contains("invalid control character in URL"),
        "{refused:#}"
    );
}
