//! Alerting in the local stack: Alertmanager's configuration is what amtool
//! accepts, and with --alerts-as-tasks a critical alert reaches people (the
//! inbox) and becomes an `sre` task through ingest's alertmanager source.

use std::time::{Duration, Instant};

use super::{free_port, up_with};

/// A stack with --alerts-as-tasks and one-second grouping (tests only),
/// and `extra`.
fn alerting_stack(state: &std::path::Path, ports: [u16; 16], extra: &[&str]) -> super::Stack {
    let mut args = vec![
        "--alerts-as-tasks",
        "--alert-group-wait",
        "1s",
        "--alert-group-interval",
        "1s",
    ];
    args.extend(extra);
    up_with(state, ports, &args)
}

/// A JSON answer, with the operator's token when given; None until it comes.
async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Option<serde_json::Value> {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token.trim());
    }
    request.send().await.ok()?.json().await.ok()
}

/// The `sre` tasks task-dispatcher lists, once there are any.
async fn sre_tasks(
    http: &reqwest::Client,
    dispatcher_port: u16,
    operator: &str,
) -> Option<Vec<serde_json::Value>> {
    let url = format!("http://127.0.0.1:{dispatcher_port}/v1/tasks?kind=sre");
    let tasks = get_json(http, &url, Some(operator)).await?["tasks"]
        .as_array()?
        .clone();
    (!tasks.is_empty()).then_some(tasks)
}

#[tokio::test]
async fn with_alerts_as_tasks_a_critical_alert_reaches_the_inbox_and_becomes_one_sre_task() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ports = [0; 16].map(|_| free_port());
    let _stack = alerting_stack(&state, ports, &[]);
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
    let inbox = state.join("logs/alerts.jsonl");
    let tasks = within(60, "an sre task and the inbox entry", async || {
        let in_inbox = std::fs::read_to_string(&inbox)
            .unwrap_or_default()
            .contains("RaveOutboxBacklog");
        sre_tasks(&http, ports[3], &operator)
            .await
            .filter(|_| in_inbox)
    })
    .await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["kind"], "sre");
}

fn up_args(extra: &[&str]) -> ravectl::cli::UpArgs {
    use clap::Parser as _;
    let cli = ravectl::cli::Cli::try_parse_from(["ravectl", "up"].iter().chain(extra)).unwrap();
    match cli.command {
        ravectl::cli::Command::Up(args) => *args,
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

/// Polls `check` until it gives a value, for at most `secs`.
async fn within<T>(secs: u64, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn signal(pid: u64, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test]
async fn a_real_outage_fires_an_alert_that_reaches_people_at_once_becomes_a_task_once_rave_recovers_and_resolves()
 {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ports = [0; 16].map(|_| free_port());
    // Short `for:` and grouping: this test's configuration only.
    let _stack = alerting_stack(&state, ports, &["--alert-for", "RaveTargetDown=2s"]);
    let stack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("stack.json")).unwrap()).unwrap();
    let dispatcher_pid = stack["components"]["task-dispatcher"][0].as_u64().unwrap();
    let http = reqwest::Client::new();
    let prometheus = format!("http://127.0.0.1:{}", ports[8]);
    let inbox = state.join("logs/alerts.jsonl");
    let notified = |status: &'static str| {
        let inbox = inbox.clone();
        move || {
            std::fs::read_to_string(&inbox)
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    let n: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                    n["status"] == status && n["commonLabels"]["alertname"] == "RaveTargetDown"
                })
        }
    };

    // The condition: task-dispatcher hangs (stopped, so it is not restarted).
    signal(dispatcher_pid, "-STOP");
    within(90, "RaveTargetDown firing in Prometheus", async || {
        let alerts = get_json(&http, &format!("{prometheus}/api/v1/alerts"), None).await?;
        alerts["data"]["alerts"].as_array()?.iter().find(|a| {
            a["labels"]["alertname"] == "RaveTargetDown"
                && a["labels"]["job"] == "task-dispatcher"
                && a["state"] == "firing"
        })?;
        Some(())
    })
    .await;
    // People have it at once, whatever happens to RAVE.
    let firing = notified("firing");
    within(60, "the firing notification in the inbox", async || {
        firing().then_some(())
    })
    .await;
    // RAVE took it in too (stored; the dispatcher that would make it a task is down).
    let operator = std::fs::read_to_string(state.join("secrets/operator.token")).unwrap();
    let stored = async || -> Option<Vec<String>> {
        let url = format!(
            "http://127.0.0.1:{}/v1/events?source=alertmanager",
            ports[1]
        );
        let events = get_json(&http, &url, Some(&operator)).await?;
        Some(
            events["events"]
                .as_array()?
                .iter()
                .filter_map(|e| e["event_type"].as_str().map(str::to_owned))
                .collect(),
        )
    };
    within(60, "the alert stored as an event", async || {
        stored()
            .await
            .filter(|t| t.iter().any(|t| t == "alert.firing"))
    })
    .await;

    // RAVE recovers: the alert becomes a task, and resolves.
    signal(dispatcher_pid, "-CONT");
    let tasks = within(90, "an sre task", async || {
        sre_tasks(&http, ports[3], &operator).await
    })
    .await;
    assert_eq!(
        tasks.len(),
        1,
        "one task for one firing alert: {tasks:?}\ninbox:\n{}",
        std::fs::read_to_string(&inbox).unwrap_or_default()
    );
    let resolved = notified("resolved");
    within(90, "the resolved notification in the inbox", async || {
        resolved().then_some(())
    })
    .await;
    within(60, "the resolution stored as an event", async || {
        stored()
            .await
            .filter(|t| t.iter().any(|t| t == "alert.resolved"))
    })
    .await;
}

#[tokio::test]
async fn the_alert_inbox_refuses_what_is_not_a_notification_and_keeps_each_one_that_is() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alerts.jsonl");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(ravectl::up::alerting::inbox(listener, log.clone()).unwrap());
    let http = reqwest::Client::new();
    let refused = http.post(&url).body("not json").send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_body");
    assert!(!log.exists(), "nothing refused was kept");
    let notification = serde_json::json!({
        "status": "firing",
        "alerts": [{"status": "firing", "labels": {"alertname": "RaveTest", "severity": "warning"}, "annotations": {"summary": "A test."}}],
    });
    for _ in 0..2 {
        let kept = http.post(&url).json(&notification).send().await.unwrap();
        assert_eq!(kept.status(), 200);
    }
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, [notification.clone(), notification]);
    assert_eq!(
        http.get(url.replace("/alerts", "/other"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}
