//! An operator's replays and what-if evaluations, and their refusals.

use rave_service::settings::Secret;
use serde_json::{Value, json};
use test_support::pg::PgCluster;

use super::*;

#[tokio::test]
async fn an_operator_sees_what_a_fixed_rule_changes_then_replays_the_ignored_events_once() {
    let p = pipeline().await;
    let mut deliveries: Vec<_> = (0..3).map(|n| push(n, "main")).collect();
    deliveries.extend((0..2).map(|n| push(n, "dev")));
    deliveries.extend((0..4).map(issue));
    p.stored(deliveries).await;
    assert_eq!(p.count("SELECT count(*) FROM tasks").await, 5);
    assert_eq!(p.count("SELECT count(*) FROM ignored_events").await, 4);

    // What would the fix change? Nothing is written.
    let (status, diff) = p
        .operator("/v1/routes/diff", &json!({"routes_toml": FIXED_ROUTES}))
        .await;
    assert_eq!(status, 200, "{diff}");
    assert_eq!(
        (diff["scanned"].as_u64(), diff["changed"].as_u64()),
        (Some(9), Some(7))
    );
    let group = |change: &str| {
        diff["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["change"] == change)
            .cloned()
            .unwrap_or_else(|| panic!("no {change} group in {diff}"))
    };
    let stops = group("stops_ignored");
    assert_eq!(
        (
            stops["from"].as_str(),
            stops["to"].as_str(),
            stops["count"].as_u64()
        ),
        (Some("ignored"), Some("triage"), Some(4))
    );
    let priority = group("priority");
    assert_eq!(
        (
            priority["from"].as_str(),
            priority["to"].as_str(),
            priority["count"].as_u64()
        ),
        (Some("5"), Some("1"), Some(3))
    );
    assert!(
        priority["examples"][0]["event_uuid"]
            .as_str()
            .unwrap()
            .starts_with("push-main-")
    );
    assert_eq!(
        p.count("SELECT count(*) FROM tasks").await,
        5,
        "a diff writes nothing"
    );

    // A proposal the dispatcher would refuse is refused here, naming it.
    let (status, bad) = p
        .operator(
            "/v1/routes/diff",
            &json!({"routes_toml": "[[routes]]\nkind = \"Bad Kind\""}),
        )
        .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("routes[0]"),
        "{bad}"
    );

    // The fix goes live; the ignored events are replayed (a dry run first).
    let mut fixed = p.dispatcher.clone();
    fixed.routes = routes(FIXED_ROUTES);
    p.reloader.apply(&fixed).unwrap();
    let (status, dry) = p.replay(json!({"from": "ignored"})).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (dry["matched"].as_i64(), dry["created"].as_i64()),
        (Some(4), Some(0))
    );
    assert!(
        dry["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] == "triage" && e["outcome"] == "task")
    );
    assert_eq!(
        p.count("SELECT count(*) FROM tasks").await,
        5,
        "a dry run writes nothing"
    );

    let request = json!({"request_id": "fix-issues-1", "from": "ignored", "dry_run": false});
    let (status, done) = p.replay(request.clone()).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (
            done["matched"].as_i64(),
            done["created"].as_i64(),
            done["repeated"].as_bool()
        ),
        (Some(4), Some(4), Some(false))
    );
    assert_eq!(p.count("SELECT count(*) FROM tasks WHERE kind = 'triage' AND state = 'queued' AND policy = 'serialize'").await, 4);
    // Each new task names its original; the originals stay as they were.
    assert_eq!(
        p.count("SELECT count(*) FROM replayed_tasks r JOIN ignored_events i ON i.task_id = r.original_task_id
                 JOIN tasks t ON t.task_id = r.task_id WHERE r.request_id = 'fix-issues-1'").await,
        4
    );
    assert_eq!(p.count("SELECT count(*) FROM ignored_events").await, 4);

    // The same request again: answered from its record, nothing new.
    let (status, again) = p.replay(request).await;
    assert_eq!(
        (
            status,
            again["repeated"].as_bool(),
            again["created"].as_i64()
        ),
        (200, Some(true), Some(4))
    );
    assert_eq!(p.count("SELECT count(*) FROM tasks").await, 9);
    // The same request id for another replay is refused.
    let (status, conflict) = p
        .replay(json!({"request_id": "fix-issues-1", "dry_run": false}))
        .await;
    assert_eq!(
        (status, conflict["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    // Search-driven replay of main-branch pushes under the fixed rules: new
    // tasks at the new priority, beside the untouched originals.
    let (status, mains) = p
        .replay(json!({"request_id": "mains", "dry_run": false, "filter": {
            "event_types": ["push"], "where": [{"pointer": "/ref", "equals": "refs/heads/main"}]}}))
        .await;
    assert_eq!(
        (status, mains["created"].as_i64()),
        (200, Some(3)),
        "{mains}"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM tasks WHERE priority = 1")
            .await,
        3
    );
    assert_eq!(
        p.count("SELECT count(*) FROM tasks WHERE kind = 'webhook' AND priority = 5")
            .await,
        5
    );

    // The record: who, what, and the tasks it made.
    let record: Value = p
        .http
        .get(format!("{}/v1/replays/mains", p.dispatcher_url))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["tasks"].as_array().unwrap().len(), 3, "{record}");
    // Each of them, read as a task, names its original and the replay.
    let first = &record["tasks"][0];
    let task: Value = p
        .http
        .get(format!(
            "{}/v1/tasks/{}",
            p.dispatcher_url,
            first["task_id"].as_str().unwrap()
        ))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["replay"]["request_id"], "mains", "{task}");
    assert_eq!(
        task["replay"]["original_task_id"],
        first["original_task_id"]
    );
    assert!(
        record["requested_by"]
            .as_str()
            .unwrap()
            .starts_with("token:")
    );
    assert!(record["finished_at"].is_string());
    assert!(
        !record.to_string().contains(OPERATOR_TOKEN),
        "the token never appears"
    );
}

#[tokio::test]
async fn a_replay_is_refused_with_a_4xx_without_a_request_id_a_token_or_within_its_cap() {
    let p = pipeline().await;
    let cases = [
        (json!({"dry_run": false}), 400, "invalid_request"),
        (json!({"max_events": 0}), 400, "invalid_request"),
        (json!({"max_events": 1_000_000}), 400, "invalid_request"),
        (json!({"request_id": "has space"}), 400, "invalid_request"),
        (
            json!({"filter": {"where": [{"pointer": "nope", "exists": true}]}}),
            400,
            "invalid_request",
        ),
        (
            json!({"from": "ignored", "filter": {"task_ids": ["0123456789abcdef"]}}),
            400,
            "invalid_request",
        ),
        (json!({"colour": "blue"}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = p.replay(body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let anonymous = p
        .http
        .post(format!("{}/v1/replays", p.dispatcher_url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let missing = p
        .http
        .get(format!("{}/v1/replays/never-ran", p.dispatcher_url))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        json_of_response(missing).await["error"]["code"],
        "replay_not_found"
    );
}

#[tokio::test]
async fn a_capped_replay_says_where_the_next_one_starts_and_the_two_cover_every_event_once() {
    let p = pipeline().await;
    p.stored((0..7).map(|n| push(n, "main")).collect()).await;
    let (_, first) = p
        .replay(json!({"request_id": "part-1", "dry_run": false, "max_events": 4}))
        .await;
    assert_eq!(
        (first["created"].as_i64(), first["truncated"].as_bool()),
        (Some(4), Some(true)),
        "{first}"
    );
    let after = first["next_after"].as_i64().expect("a cursor");
    let (_, second) = p
        .replay(json!({"request_id": "part-2", "dry_run": false, "max_events": 4, "filter": {"after": after}}))
        .await;
    assert_eq!(
        (second["created"].as_i64(), second["truncated"].as_bool()),
        (Some(3), Some(false)),
        "{second}"
    );
    assert_eq!(
        p.count("SELECT count(DISTINCT original_task_id) FROM replayed_tasks")
            .await,
        7
    );
}

#[tokio::test]
async fn a_replay_from_ignored_events_applies_its_filter_before_its_cap() {
    let p = pipeline().await;
    p.stored((0..6).map(issue).collect()).await;
    let mut fixed = p.dispatcher.clone();
    fixed.routes = routes(FIXED_ROUTES);
    p.reloader.apply(&fixed).unwrap();
    // One event, the newest: the oldest ignored ones do not use up the cap.
    let (status, answer) = p
        .replay(
            json!({"request_id": "newest", "dry_run": false, "from": "ignored", "max_events": 1,
                       "filter": {"where": [{"pointer": "/issue/number", "equals": 5}]}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            answer["matched"].as_i64(),
            answer["created"].as_i64(),
            answer["truncated"].as_bool()
        ),
        (Some(1), Some(1), Some(true)),
        "{answer}"
    );
    assert_eq!(answer["events"][0]["event_uuid"], "issue-5");
    // Without a cap, every ignored event, once.
    let (_, all) = p
        .replay(json!({"request_id": "all-ignored", "dry_run": false, "from": "ignored"}))
        .await;
    assert_eq!(
        (all["matched"].as_i64(), all["truncated"].as_bool()),
        (Some(6), Some(false)),
        "{all}"
    );
}

#[tokio::test]
async fn a_replay_while_dedup_store_is_unreachable_is_a_503_to_retry_and_changes_nothing() {
    let cluster = PgCluster::shared();
    let tasks_db = cluster.create_database().await.unwrap();
    let mut dispatcher: task_dispatcher::Settings = defaults();
    dispatcher.server.port = 0;
    dispatcher.database = tasks_db.settings();
    dispatcher.operator_tokens = vec![Secret::new(OPERATOR_TOKEN)];
    // Nothing listens there.
    dispatcher.events_store.url = Some(format!("http://127.0.0.1:{}", test_support::free_port()));
    dispatcher.events_store.token = Some(Secret::new(test_support::STORE_OPERATOR_TOKEN));
    let app = task_dispatcher::Application::build(dispatcher)
        .await
        .unwrap();
    let url = serve(app.port(), app.run_until_stopped()).await;
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/replays"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"request_id": "down", "dry_run": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "events_store_unavailable");
    assert_eq!(tasks_db.scalar("SELECT count(*) FROM tasks").await, 0);
    // Its record stays unfinished: the same request later finishes it.
    assert_eq!(
        tasks_db
            .scalar(
                "SELECT count(*) FROM replays WHERE request_id = 'down' AND finished_at IS NULL"
            )
            .await,
        1
    );
}

#[tokio::test]
async fn a_replay_from_quarantine_makes_the_tasks_the_set_aside_events_never_became() {
    let p = pipeline().await;
    // Two stored events the dispatcher set aside (as when PostgreSQL
    // refused them): their outbox rows gone, quarantine records in place.
    let statuses = p.send(vec![push(0, "main"), push(1, "main")]).await;
    assert_eq!(statuses, [202, 202]);
    let events = p.events_db.connect().await.unwrap();
    let stored = events
        .query("DELETE FROM outbox RETURNING task_id", &[])
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    let tasks = p.tasks_db.connect().await.unwrap();
    for row in &stored {
        let task_id: String = row.get(0);
        tasks
            .execute(
                "INSERT INTO quarantined_events (task_id, source, event_uuid, event_type, reason, event, quarantined_at, updated_at)
                 VALUES ($1, 'github', 'x', 'push', 'refused then', '\\x7b7d', now(), now())",
                &[&task_id],
            )
            .await
            .unwrap();
    }
    let (status, answer) = p
        .replay(json!({"request_id": "from-quarantine", "dry_run": false, "from": "quarantined"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["matched"].as_i64(), answer["created"].as_i64()),
        (Some(2), Some(2)),
        "{answer}"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM replayed_tasks r JOIN quarantined_events q ON q.task_id = r.original_task_id
                 JOIN tasks t ON t.task_id = r.task_id").await,
        2,
        "each new task names its set-aside original, whose record stays"
    );
}
