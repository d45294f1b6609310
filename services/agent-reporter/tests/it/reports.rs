use serde_json::{Value, json};

use crate::helpers::{report, sample, spawn_reporter};

#[tokio::test]
async fn a_report_is_accepted_once_and_its_retry_is_recognised() {
    let r = spawn_reporter(None).await;
    let body = report("succeeded", 12.5);
    assert_eq!(
        r.post("agent-1", &body).await,
        (202, json!({"status": "accepted"}))
    );
    assert_eq!(
        r.post("agent-1", &body).await,
        (200, json!({"status": "duplicate"}))
    );
    let db = r.db.connect().await.unwrap();
    let jobs: f64 = db
        .query_one(
            "SELECT value FROM series WHERE agent = 'agent-1' AND name = 'agent_jobs_total'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 1.0, "a retried report is not counted twice");
    let metrics = r.metrics().await;
    assert_eq!(
        sample(&metrics, "reporter_reports_total{outcome=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        sample(&metrics, "reporter_reports_total{outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(sample(&metrics, "reporter_buffered_reports"), 1.0);
}

#[tokio::test]
async fn bad_reports_are_refused_with_their_status_and_the_path_of_the_bad_field() {
    let r = spawn_reporter(None).await;
    let with = |patch: Value| {
        let mut body = report("succeeded", 1.0);
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let many: Vec<Value> = (0..17)
        .map(|i| json!({"name": format!("m{i}"), "value": 1}))
        .collect();
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        ("not JSON", "{not json".into(), 400, "invalid_json", ""),
        ("no task_id", json!({"kind": "review", "status": "succeeded", "started_at": "2026-11-27T10:00:00Z", "duration_seconds": 1}).to_string(), 422, "invalid_report", "task_id"),
        ("bad task_id", with(json!({"task_id": "xyz"})).to_string(), 422, "invalid_report", "task_id"),
        ("bad kind", with(json!({"kind": "Review!"})).to_string(), 422, "invalid_report", "kind"),
        ("bad status", with(json!({"status": "exploded"})).to_string(), 422, "invalid_report", "status"),
        ("bad time", with(json!({"started_at": "yesterday"})).to_string(), 422, "invalid_report", "started_at"),
        ("negative duration", with(json!({"duration_seconds": -1})).to_string(), 422, "invalid_report", "duration_seconds"),
        ("negative cost", with(json!({"cost": -0.5})).to_string(), 422, "invalid_report", "cost"),
        ("negative tokens", with(json!({"tokens_input": -3})).to_string(), 422, "invalid_report", "tokens_input"),
        ("bad metric name", with(json!({"metrics": [{"name": "ok", "value": 1}, {"name": "Bad-Name", "value": 1}]})).to_string(), 422, "invalid_report", "metrics[1].name"),
        ("reserved label", with(json!({"metrics": [{"name": "files", "value": 1, "labels": {"job": "x"}}]})).to_string(), 422, "invalid_report", "metrics[0].labels.job"),
        ("long label value", with(json!({"metrics": [{"name": "files", "value": 1, "labels": {"lang": "x".repeat(65)}}]})).to_string(), 422, "invalid_report", "metrics[0].labels.lang"),
        ("negative metric", with(json!({"metrics": [{"name": "files", "value": -1}]})).to_string(), 422, "invalid_report", "metrics[0].value"),
        ("too many metrics", with(json!({"metrics": many})).to_string(), 422, "invalid_report", "metrics"),
        ("naming an agent", with(json!({"agent": "agent-2"})).to_string(), 422, "invalid_report", "agent"),
        ("too large", format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000)), 413, "body_too_large", ""),
    ];
    for (what, body, status, code, path) in cases {
        let (got, answer) = r.post_raw("agent-1", body).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(path) || message.contains(path),
            "{what}: {message:?} should name {path:?}"
        );
    }
    let (got, answer) = r
        .post_raw("nobody", report("succeeded", 1.0).to_string())
        .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );

    let db = r.db.connect().await.unwrap();
    let series: i64 = db
        .query_one("SELECT count(*) FROM series", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(series, 0, "nothing refused was recorded");
    let metrics = r.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "reporter_reports_rejected_total{reason=\"invalid_report\"}"
        ),
        14.0
    );
}

#[tokio::test]
async fn custom_labels_cannot_grow_an_agents_series_without_bound() {
    let r = spawn_reporter(None).await; // at most 60 series per agent
    let mut last = (0, Value::Null);
    for i in 0..60 {
        let mut body = report("succeeded", 1.0);
        body["metrics"] =
            json!([{"name": "files", "value": 1, "labels": {"repo": format!("r{i}")}}]);
        last = r.post("agent-1", &body).await;
        if last.0 != 202 {
            break;
        }
    }
    assert_eq!(
        (last.0, last.1["error"]["code"].as_str()),
        (422, Some("too_many_series"))
    );
    let (status, _) = r.post("agent-1", &report("succeeded", 2.0)).await;
    assert_eq!(
        status, 202,
        "reports within the existing series still count"
    );
}

#[tokio::test]
async fn concurrent_reports_cannot_pass_an_agents_series_limit_together() {
    let r = spawn_reporter(None).await; // at most 60 series per agent
    // Each report brings a series of its own; sent together, each would
    // see room if reports did not take turns.
    let bodies: Vec<Value> = (0..120)
        .map(|i| {
            let mut body = report("succeeded", 1.0);
            body["metrics"] =
                json!([{"name": "files", "value": 1, "labels": {"repo": format!("r{i}")}}]);
            body
        })
        .collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|b| r.post("agent-1", b))).await;
    let accepted = answers.iter().filter(|(status, _)| *status == 202).count();
    let refused = answers.iter().filter(|(status, _)| *status == 422).count();
    assert_eq!(accepted + refused, 120, "{answers:?}");
    let series =
        r.db.scalar("SELECT count(*) FROM series WHERE agent = 'agent-1'")
            .await;
    assert!(series <= 60, "{series} series stored past the limit of 60");
    assert!(refused > 0);
}

#[tokio::test]
async fn each_agent_reports_within_its_own_rate_whatever_address_it_shares() {
    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .unwrap();
    let r = crate::helpers::spawn_reporter_with(db, None, |s| {
        s.limits.agent_requests = rave_service::limit::RateSettings {
            per_second: 1,
            burst: 2,
        };
    })
    .await;
    for _ in 0..2 {
        assert_eq!(r.post("agent-1", &report("succeeded", 1.0)).await.0, 202);
    }
    let (status, body) = r.post("agent-1", &report("succeeded", 1.0)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(
        r.post("agent-2", &report("succeeded", 1.0)).await.0,
        202,
        "its own budget"
    );
}

#[tokio::test]
async fn the_last_report_age_counts_from_the_newest_report_not_from_a_re_push() {
    let r = spawn_reporter(None).await;
    // PostgreSQL keeps microseconds; the clock has nanoseconds.
    let age_is = |text: String, secs: f64| {
        let age = sample(&text, "reporter_last_report_age_seconds");
        assert!((age - secs).abs() < 1e-3, "age {age}, expected {secs}");
    };
    // No report yet: at least as long as the reporter has run.
    r.advance(120);
    age_is(r.metrics().await, 120.0);
    assert_eq!(r.post("agent-1", &report("succeeded", 1.0)).await.0, 202);
    age_is(r.metrics().await, 0.0);
    r.advance(600);
    assert_eq!(r.post("agent-2", &report("failed", 1.0)).await.0, 202);
    r.advance(45);
    // The newest report of any agent counts.
    age_is(r.metrics().await, 45.0);
}

#[tokio::test]
async fn reports_committed_together_each_get_the_outcome_they_would_get_alone() {
    use agent_reporter::record::{Pending, Recorded, record_batch};
    use rave_service::clock::Clock as _;
    let r = spawn_reporter(None).await; // migrated; at most 60 series per agent
    let pool = rave_pg::pool(&r.db.settings(), "test").unwrap();
    let pending = |agent: &str, body: &Value| Pending {
        agent: rave_service::ids::AgentId::parse(agent).unwrap(),
        report: agent_reporter::report::Report::parse(body.to_string().as_bytes()).unwrap(),
        now: r.clock.now(),
        bytes: 0,
    };
    let a = report("succeeded", 1.0);
    let mut too_many = report("succeeded", 1.0);
    too_many["metrics"] = json!((0..16)
        .map(|i| json!({"name": format!("m{i}"), "value": 1, "labels": {"a": "1", "b": "2", "c": "3", "d": "4"}}))
        .collect::<Vec<_>>());
    // 16 custom series plus the built-in ones: past 60 only with earlier ones.
    let filler: Vec<Value> = (0..3)
        .map(|i| {
            let mut b = report("failed", 2.0);
            b["metrics"] = json!(
                (0..16)
                    .map(|j| json!({"name": format!("f{i}x{j}"), "value": 1}))
                    .collect::<Vec<_>>()
            );
            b
        })
        .collect();
    let items = [
        pending("agent-1", &a),
        pending("agent-2", &report("succeeded", 3.0)),
        pending("agent-1", &a),
        pending("agent-1", &filler[0]),
        pending("agent-1", &filler[1]),
        pending("agent-1", &filler[2]),
        pending("agent-1", &too_many),
        pending("agent-2", &report("cancelled", 4.0)),
    ];
    let refs: Vec<&Pending> = items.iter().collect();
    let outcomes = record_batch(&pool, &refs, 60).await.unwrap();
    use Recorded::{Duplicate, New, TooManySeries};
    assert_eq!(
        outcomes,
        [
            New,
            New,
            Duplicate,
            New,
            New,
            TooManySeries,
            TooManySeries,
            New
        ],
        "in order, as if each came alone"
    );
    let jobs = |agent: &str| {
        format!(
            "SELECT sum(value)::bigint FROM series WHERE agent = '{agent}' AND name = 'agent_jobs_total'"
        )
    };
    assert_eq!(r.db.scalar(&jobs("agent-1")).await, 3, "a, filler 0 and 1");
    assert_eq!(r.db.scalar(&jobs("agent-2")).await, 2);
    assert!(
        r.db.scalar("SELECT count(*) FROM series WHERE agent = 'agent-1'")
            .await
            <= 60
    );
    assert_eq!(r.db.scalar("SELECT count(*) FROM reports").await, 5);
    // The same batch again is all duplicates (an agent retrying them).
    let again = record_batch(&pool, &refs, 60).await.unwrap();
    assert_eq!(
        again,
        [
            Duplicate,
            Duplicate,
            Duplicate,
            Duplicate,
            Duplicate,
            TooManySeries,
            TooManySeries,
            Duplicate
        ]
    );
    assert_eq!(r.db.scalar(&jobs("agent-1")).await, 3);
}
