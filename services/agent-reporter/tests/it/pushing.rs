use serde_json::json;
use test_support::pushgateway::{Pushgateway, find_sample};

use crate::helpers::{
    RETENTION_HOURS, TTL_SECS, jobs_of, report, sample, spawn_reporter, spawn_reporter_on,
};

#[tokio::test]
async fn reported_jobs_show_up_in_the_pushgateway_with_the_right_values() {
    let gateway = Pushgateway::start().await.unwrap();
    let r = spawn_reporter(Some(&gateway.url)).await;
    let mut ok = report("succeeded", 3.0);
    ok["tokens_input"] = json!(1200);
    ok["tokens_output"] = json!(300);
    ok["cost"] = json!(0.25);
    ok["metrics"] = json!([{"name": "files_reviewed", "value": 4, "labels": {"language": "rust"}}]);
    r.post("agent-1", &ok).await;
    r.post("agent-1", &report("failed", 70.0)).await;
    r.post("agent-2", &report("succeeded", 1.0)).await;

    let summary = r.pusher().push_once().await.unwrap();
    assert_eq!(
        (summary.pushed, summary.failed),
        (2, 0),
        "one group per agent"
    );
    let text = gateway.metrics().await;
    let agent1 = [
        ("job", "rave_agents"),
        ("agent", "agent-1"),
        ("kind", "review"),
    ];
    let value = |name: &str, extra: &[(&str, &str)]| {
        let labels: Vec<(&str, &str)> = agent1.iter().chain(extra).copied().collect();
        find_sample(&text, name, &labels)
    };
    assert_eq!(
        value("agent_jobs_total", &[("status", "succeeded")]),
        Some(1.0)
    );
    assert_eq!(
        value("agent_jobs_total", &[("status", "failed")]),
        Some(1.0)
    );
    assert_eq!(
        value("agent_job_duration_seconds_bucket", &[("le", "5")]),
        Some(1.0)
    );
    assert_eq!(
        value("agent_job_duration_seconds_bucket", &[("le", "120")]),
        Some(2.0)
    );
    assert_eq!(
        value("agent_job_duration_seconds_bucket", &[("le", "+Inf")]),
        Some(2.0)
    );
    assert_eq!(value("agent_job_duration_seconds_sum", &[]), Some(73.0));
    assert_eq!(value("agent_job_duration_seconds_count", &[]), Some(2.0));
    assert_eq!(
        value("agent_tokens_total", &[("type", "input")]),
        Some(1200.0)
    );
    assert_eq!(value("agent_cost_total", &[]), Some(0.25));
    assert_eq!(
        value("agent_custom_files_reviewed_total", &[("language", "rust")]),
        Some(4.0)
    );
    assert_eq!(
        find_sample(
            &text,
            "agent_jobs_total",
            &[("agent", "agent-2"), ("status", "succeeded")]
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("task_id"),
        "no task id in any label or group"
    );
    assert!(
        find_sample(&text, "push_time_seconds", &[("agent", "agent-1")]).is_some_and(|t| t > 0.0)
    );

    let nothing_new = r.pusher().push_once().await.unwrap();
    assert_eq!(
        nothing_new.pushed, 0,
        "unchanged groups are not pushed again before the interval"
    );
    assert_eq!(sample(&r.metrics().await, "reporter_pushes_total"), 2.0);
}

#[tokio::test]
async fn while_the_pushgateway_is_down_nothing_reported_is_lost() {
    let mut gateway = Pushgateway::start().await.unwrap();
    let r = spawn_reporter(Some(&gateway.url)).await;
    r.post("agent-1", &report("succeeded", 1.0)).await;
    r.pusher().push_once().await.unwrap();

    gateway.stop();
    for _ in 0..3 {
        assert_eq!(
            r.post("agent-1", &report("succeeded", 1.0)).await.0,
            202,
            "reports are still accepted"
        );
    }
    let summary = r.pusher().push_once().await.unwrap();
    assert_eq!(summary.failed, 1);
    let metrics = r.metrics().await;
    assert_eq!(sample(&metrics, "reporter_push_failures_total"), 1.0);
    assert_eq!(sample(&metrics, "reporter_buffered_reports"), 3.0);

    // It comes back empty (no persistence): the next push restores everything.
    gateway.resume().await.unwrap();
    assert_eq!(r.pusher().push_once().await.unwrap().pushed, 1);
    let text = gateway.metrics().await;
    assert_eq!(
        find_sample(
            &text,
            "agent_jobs_total",
            &[("agent", "agent-1"), ("status", "succeeded")]
        ),
        Some(4.0)
    );
    assert_eq!(sample(&r.metrics().await, "reporter_buffered_reports"), 0.0);
}

#[tokio::test]
async fn a_silent_agents_group_is_deleted_after_the_ttl() {
    let gateway = Pushgateway::start().await.unwrap();
    let r = spawn_reporter(Some(&gateway.url)).await;
    r.post("agent-1", &report("succeeded", 1.0)).await;
    r.post("agent-2", &report("succeeded", 1.0)).await;
    r.pusher().push_once().await.unwrap();

    r.advance(TTL_SECS - 10);
    r.post("agent-2", &report("succeeded", 1.0)).await; // agent-2 is still active
    r.advance(20);
    let summary = r.pusher().push_once().await.unwrap();
    assert_eq!(summary.deleted, 1);
    let text = gateway.metrics().await;
    assert_eq!(jobs_of(&text, "agent-1"), None);
    assert_eq!(jobs_of(&text, "agent-2"), Some(2.0));
    assert_eq!(
        sample(&r.metrics().await, "reporter_groups_deleted_total"),
        1.0
    );
}

#[tokio::test]
async fn a_restarted_reporter_keeps_its_counters() {
    let gateway = Pushgateway::start().await.unwrap();
    let first = spawn_reporter(Some(&gateway.url)).await;
    first.post("agent-1", &report("succeeded", 1.0)).await;
    first.post("agent-1", &report("succeeded", 1.0)).await;
    first.handle.stop(true).await;
    first.stopped.await.unwrap().unwrap(); // its last push happens on the way out
    assert_eq!(
        jobs_of(&gateway.metrics().await, "agent-1"),
        Some(2.0),
        "pushed on shutdown"
    );

    let second = spawn_reporter_on(first.db.clone(), Some(&gateway.url)).await;
    second.post("agent-1", &report("succeeded", 1.0)).await;
    second.pusher().push_once().await.unwrap();
    assert_eq!(jobs_of(&gateway.metrics().await, "agent-1"), Some(3.0));
}

#[tokio::test]
async fn a_push_refused_for_a_clashing_metric_type_is_surfaced() {
    let gateway = Pushgateway::start().await.unwrap();
    // Someone else pushed agent_jobs_total as a gauge in another group.
    let clash = reqwest::Client::new()
        .put(format!("{}/metrics/job/other", gateway.url))
        .body("# TYPE agent_jobs_total gauge\nagent_jobs_total 1\n")
        .send()
        .await
        .unwrap();
    assert!(clash.status().is_success());
    let r = spawn_reporter(Some(&gateway.url)).await;
    r.post("agent-1", &report("succeeded", 1.0)).await;
    let summary = r.pusher().push_once().await.unwrap();
    assert_eq!(summary.failed, 1);
    assert_eq!(
        sample(&r.metrics().await, "reporter_push_rejected_total"),
        1.0
    );
    let db = r.db.connect().await.unwrap();
    let error: String = db
        .query_one(
            "SELECT last_push_error FROM agent_groups WHERE agent = 'agent-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        error.contains("400") && error.contains("agent_jobs_total"),
        "{error}"
    );
}

#[tokio::test]
async fn reports_are_remembered_for_the_configured_retention_then_forgotten() {
    let gateway = Pushgateway::start().await.unwrap();
    let r = spawn_reporter(Some(&gateway.url)).await;
    let body = report("succeeded", 1.0);
    assert_eq!(r.post("agent-1", &body).await.0, 202);
    r.advance(RETENTION_HOURS * 3600 - 60);
    r.pusher().push_once().await.unwrap();
    assert_eq!(
        r.post("agent-1", &body).await.0,
        200,
        "within the retention a retry is a duplicate"
    );
    r.advance(120);
    r.pusher().push_once().await.unwrap();
    assert_eq!(
        r.post("agent-1", &body).await.0,
        202,
        "past the retention it is no longer remembered"
    );
}
