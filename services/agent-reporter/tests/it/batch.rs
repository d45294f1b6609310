//! `POST /v1/reports/batch`: many reports in one call, each answered alone.

use serde_json::{Value, json};

use crate::helpers::{TestReporter, report, sample, spawn_reporter_with};

async fn reporter() -> TestReporter {
    let db = test_support::pg::PgCluster::shared()
        .create_database()
        .await
        .expect("test database");
    spawn_reporter_with(db, None, |s| {
        s.limits.max_report_bytes = 2048;
        s.limits.max_batch_bytes = 8192;
        s.limits.max_reports_per_call = 5;
    })
    .await
}

#[tokio::test]
async fn a_batch_answers_each_report_in_order_as_its_own_call_would() {
    let r = reporter().await;
    let earlier = report("succeeded", 1.0);
    assert_eq!(r.post("agent-1", &earlier).await.0, 202);
    let new = report("failed", 2.0);
    let mut bad = report("succeeded", -1.0);
    bad["task_id"] = json!("00000000000000aa");
    let mut too_big = report("succeeded", 1.0);
    too_big["metrics"] = json!([{"name": "x", "value": 1, "labels": {"l": "v".repeat(3000)}}]);
    let (status, answer) = r
        .post_batch(
            "agent-1",
            &[earlier.clone(), new.clone(), bad, json!(42), too_big],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().expect("results");
    let got: Vec<(Value, Value)> = results
        .iter()
        .map(|i| (i["status"].clone(), i["outcome"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!(200), json!("duplicate")),
            (json!(202), json!("accepted")),
            (json!(422), Value::Null),
            (json!(422), Value::Null),
            (json!(413), Value::Null),
        ]
    );
    assert_eq!(results[0]["task_id"], earlier["task_id"]);
    assert_eq!(results[1]["task_id"], new["task_id"]);
    assert_eq!(results[2]["task_id"], "00000000000000aa");
    assert_eq!(results[3]["task_id"], Value::Null, "42 names no task");
    assert_eq!(results[2]["error"]["code"], "invalid_report");
    assert!(
        results[2]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("duration_seconds"),
        "{answer}"
    );
    assert_eq!(results[4]["error"]["code"], "body_too_large");

    assert_eq!(
        r.db.scalar("SELECT count(*) FROM reports").await,
        2,
        "the earlier report and the new one, each once"
    );
    let metrics = r.metrics().await;
    assert_eq!(
        sample(&metrics, "reporter_reports_total{outcome=\"accepted\"}"),
        2.0
    );
    assert_eq!(
        sample(&metrics, "reporter_reports_total{outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "reporter_reports_rejected_total{reason=\"invalid_report\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &metrics,
            "reporter_reports_rejected_total{reason=\"body_too_large\"}"
        ),
        1.0
    );

    // The whole call again: every report it stored is now a duplicate.
    let (_, again) = r.post_batch("agent-1", &[earlier, new]).await;
    let again: Vec<&Value> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["outcome"])
        .collect();
    assert_eq!(again, [&json!("duplicate"), &json!("duplicate")]);
    assert_eq!(r.db.scalar("SELECT count(*) FROM reports").await, 2);
}

#[tokio::test]
async fn a_batch_past_its_limits_is_refused_whole_and_stores_nothing() {
    let r = reporter().await;
    let six: Vec<Value> = (0..6).map(|_| report("succeeded", 1.0)).collect();
    let (status, answer) = r.post_batch("agent-1", &six).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_report");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 5 per call"),
        "{answer}"
    );

    let mut padded = report("succeeded", 1.0);
    padded["metrics"] = json!([{"name": "x", "value": 1, "labels": {"l": "v".repeat(1500)}}]);
    let (status, answer) = r.post_batch("agent-1", &vec![padded; 5]).await;
    assert_eq!(status, 413, "over max_batch_bytes: {answer}");
    assert_eq!(answer["error"]["code"], "body_too_large");

    let (status, answer) = r
        .post_to("/v1/reports/batch", "agent-1", "{\"reports\": [".into())
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_json");

    let (status, _) = r.post_batch("nobody", &[report("succeeded", 1.0)]).await;
    assert_eq!(status, 401);

    assert_eq!(r.db.scalar("SELECT count(*) FROM reports").await, 0);
}

#[tokio::test]
async fn hostile_content_in_a_batch_is_refused_report_by_report_and_the_rest_is_stored() {
    let r = reporter().await;
    let good: Vec<Value> = (0..2).map(|_| report("succeeded", 1.0)).collect();
    let mut nul = report("succeeded", 1.0);
    nul["metrics"] = json!([{"name": "x", "value": 1, "labels": {"l": "a\u{0}b"}}]);
    let mut huge_key = report("succeeded", 1.0);
    huge_key["metrics"] = json!([{"name": "x", "value": 1, "labels": {"k".repeat(1000): "v"}}]);
    // A lone surrogate cannot be a serde_json::Value: written by hand.
    let surrogate = format!(
        r#"{{"task_id":"{}","kind":"review","status":"succeeded","started_at":"2026-11-27T10:00:00Z","duration_seconds":1,"metrics":[{{"name":"x","value":1,"labels":{{"l":"\ud800"}}}}]}}"#,
        rave_service::ids::TaskId::generate()
    );
    let body = format!(
        r#"{{"reports":[{},{},{},{},{}]}}"#,
        good[0], nul, surrogate, huge_key, good[1]
    );
    let (status, answer) = r.post_to("/v1/reports/batch", "agent-1", body).await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<&Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["status"])
        .collect();
    assert_eq!(
        statuses,
        [
            &json!(202),
            &json!(422),
            &json!(422),
            &json!(422),
            &json!(202)
        ],
        "{answer}"
    );
    assert_eq!(r.db.scalar("SELECT count(*) FROM reports").await, 2);
    let jobs: i64 = r
        .db
        .scalar("SELECT sum(value)::bigint FROM series WHERE agent = 'agent-1' AND name = 'agent_jobs_total'")
        .await;
    assert_eq!(jobs, 2, "only the two good reports were counted");
}
