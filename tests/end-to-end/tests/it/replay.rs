//! Operators' event tools across the whole pipeline (ADR 19): ingest,
//! dedup-store (whose search the replays read) and task-dispatcher (which
//! routes and replays), each on its own real database. An operator fixes a
//! rule, sees which stored events it changes, and replays them; replays
//! race new intake and each other; hostile content is replayed like any.

use futures_util::StreamExt as _;
use proptest::prelude::*;
use rave_service::settings::Secret;
use serde_json::{Value, json};
use test_support::pg::{PgCluster, TestDatabase};
use test_support::sign;

use crate::helpers::*;

const OPERATOR_TOKEN: &str = "e2e-dispatcher-operator";

/// Only pushes are routed; issues are ignored until a rule is fixed.
const LIVE_ROUTES: &str = r#"
[[routes]]
event_types = ["push"]
kind = "webhook"
"#;

/// The fix: issues become triage tasks, and main-branch pushes go first.
const FIXED_ROUTES: &str = r#"
[[routes]]
event_types = ["push"]
when = [{ pointer = "/ref", equals = "refs/heads/main" }]
kind = "webhook"
priority = 1

[[routes]]
event_types = ["push"]
kind = "webhook"

[[routes]]
event_types = ["issues"]
kind = "triage"
entity_key = ["/issue/number"]
policy = "serialize"
"#;

struct Pipeline {
    ingest_url: String,
    dispatcher_url: String,
    relay: dedup_store::relay::Relay,
    reloader: task_dispatcher::reload::Reloader,
    dispatcher: task_dispatcher::Settings,
    events_db: TestDatabase,
    tasks_db: TestDatabase,
    http: reqwest::Client,
}

fn routes(text: &str) -> Vec<task_dispatcher::settings::RouteSettings> {
    toml::from_str::<toml::Table>(text).unwrap()["routes"]
        .clone()
        .try_into()
        .unwrap()
}

async fn pipeline() -> Pipeline {
    let cluster = PgCluster::shared();
    let tasks_db = cluster.create_database().await.unwrap();
    let events_db = cluster.create_database().await.unwrap();
    // The dispatcher reads dedup-store's search, and dedup-store's relay
    // feeds the dispatcher: the store's port is chosen first.
    let store_port = test_support::free_port();

    let mut dispatcher: task_dispatcher::Settings = defaults();
    dispatcher.server.port = 0;
    dispatcher.database = tasks_db.settings();
    dispatcher.routes = routes(LIVE_ROUTES);
    dispatcher.agents = vec![agent()];
    dispatcher.relay_tokens = vec![Secret::new(RELAY_TOKEN)];
    dispatcher.operator_tokens = vec![Secret::new(OPERATOR_TOKEN)];
    dispatcher.events_store.url = Some(format!("http://127.0.0.1:{store_port}"));
    dispatcher.events_store.token = Some(Secret::new(test_support::STORE_OPERATOR_TOKEN));
    dispatcher.replay.page_size = 50;
    let app = task_dispatcher::Application::build(dispatcher.clone())
        .await
        .unwrap();
    let reloader = app.reloader();
    let dispatcher_url = serve(app.port(), app.run_until_stopped()).await;

    let (relay, store_url) = stepped_store(&events_db, store_port, &dispatcher_url).await;
    let (_, ingest_url) = github_ingest(store_url).await;
    Pipeline {
        ingest_url,
        dispatcher_url,
        relay,
        reloader,
        dispatcher,
        events_db,
        tasks_db,
        http: reqwest::Client::new(),
    }
}

impl Pipeline {
    /// Sends correctly signed deliveries (16 at a time); their statuses.
    async fn send(&self, deliveries: Vec<(String, &'static str, Vec<u8>)>) -> Vec<u16> {
        futures_util::stream::iter(deliveries.into_iter().map(|(id, event_type, body)| {
            self.http
                .post(format!("{}/hooks/github", self.ingest_url))
                .header("x-github-event", event_type)
                .header("x-github-delivery", id)
                .header("x-hub-signature-256", sign::github(GITHUB_SECRET, &body))
                .body(body)
                .send()
        }))
        .buffered(16)
        .map(|r| r.expect("ingest answers").status().as_u16())
        .collect()
        .await
    }

    async fn drain(&self) {
        while self.relay.relay_once().await.expect("the relay step") > 0 {}
    }

    /// Sends the deliveries, each accepted, and relays them all.
    async fn stored(&self, deliveries: Vec<(String, &'static str, Vec<u8>)>) {
        let statuses = self.send(deliveries).await;
        assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
        self.drain().await;
    }

    async fn operator(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.dispatcher_url))
            .bearer_auth(OPERATOR_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn replay(&self, body: Value) -> (u16, Value) {
        self.operator("/v1/replays", &body).await
    }

    async fn count(&self, sql: &str) -> i64 {
        self.tasks_db.scalar(sql).await
    }
}

async fn json_of_response(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

fn push(n: usize, branch: &str) -> (String, &'static str, Vec<u8>) {
    (
        format!("push-{branch}-{n}"),
        "push",
        format!(r#"{{"ref":"refs/heads/{branch}","n":{n}}}"#).into_bytes(),
    )
}

fn issue(n: usize) -> (String, &'static str, Vec<u8>) {
    (
        format!("issue-{n}"),
        "issues",
        format!(r#"{{"action":"opened","issue":{{"number":{n}}}}}"#).into_bytes(),
    )
}

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
async fn replays_racing_new_intake_and_each_other_make_one_task_per_event_per_request() {
    let p = pipeline().await;
    p.stored((0..150).map(|n| push(n, "main")).collect()).await;
    let originals: Vec<String> = {
        let c = p.tasks_db.connect().await.unwrap();
        c.query("SELECT task_id FROM tasks ORDER BY task_id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let replay = |id: &'static str| {
        let p = &p;
        async move {
            p.replay(
                json!({"request_id": id, "dry_run": false, "filter": {"event_types": ["push"]}}),
            )
            .await
        }
    };
    let intake = async {
        let statuses = p.send((150..250).map(|n| push(n, "dev")).collect()).await;
        p.drain().await;
        statuses
    };
    // Request "a" twice at once (a retried call), "b" beside them, and new
    // deliveries arriving and relayed meanwhile.
    let ((a1, a2, b), statuses) = tokio::join!(
        async { tokio::join!(replay("a"), replay("a"), replay("b")) },
        intake
    );
    assert!(statuses.iter().all(|s| *s == 202));
    for (status, answer) in [&a1, &a2, &b] {
        assert_eq!(*status, 200, "{answer}");
    }
    p.drain().await;

    // New intake: every delivery one task of its own.
    assert_eq!(
        p.count(
            "SELECT count(*) FROM tasks WHERE task_id NOT IN (SELECT task_id FROM replayed_tasks)"
        )
        .await,
        250
    );
    for request in ["a", "b"] {
        let client = p.tasks_db.connect().await.unwrap();
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT original_task_id), count(t.task_id)
                 FROM replayed_tasks r LEFT JOIN tasks t USING (task_id) WHERE r.request_id = $1",
                &[&request],
            )
            .await
            .unwrap();
        let (links, distinct, tasks): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (links, distinct),
            (tasks, tasks),
            "request {request}: one task per event"
        );
        // At least the events stored before it began; never more than all.
        assert!((150..=250).contains(&tasks), "request {request}: {tasks}");
        let matched: i64 = p
            .tasks_db
            .scalar(&format!(
                "SELECT matched::bigint FROM replays WHERE request_id = '{request}'"
            ))
            .await;
        assert!(matched >= 150, "{request}: {matched}");
    }
    // The originals are as they were: queued, unchanged, not replays.
    let c = p.tasks_db.connect().await.unwrap();
    let still: i64 = c
        .query_one(
            "SELECT count(*) FROM tasks WHERE task_id = ANY($1) AND state = 'queued' AND attempt = 0",
            &[&originals],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 150);
}

/// Bodies that are signed correctly but hostile, as the content test sends.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(br#"{"ref":"a\u0000b"}"#.to_vec()),
        Just(br#"{"ref":"\ud800 lone"}"#.to_vec()),
        Just(br#"{"ref":1e999}"#.to_vec()),
        (1usize..=120)
            .prop_map(|d| format!(r#"{{"ref":{}1{}}}"#, "[".repeat(d), "]".repeat(d)).into_bytes()),
        Just(b"not json".to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
        "\\PC{0,40}".prop_map(
            |s| format!(r#"{{"ref":{}}}"#, serde_json::to_string(&s).unwrap()).into_bytes()
        ),
        (0u32..1000).prop_map(|n| format!(r#"{{"ref":"refs/heads/main","n":{n}}}"#).into_bytes()),
    ]
}

#[test]
fn hostile_events_are_searched_and_replayed_like_any_each_once_with_no_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let p = runtime.block_on(pipeline());
    let config = ProptestConfig {
        cases: 4,
        max_shrink_iters: 8,
        ..ProptestConfig::default()
    };
    let case = std::sync::atomic::AtomicUsize::new(0);
    proptest!(config, |(bodies in prop::collection::vec(hostile_body(), 60))| {
        runtime.block_on(async {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let deliveries = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("hostile-{n}-{i}"), "push", b.clone()))
                .collect();
            let statuses = p.send(deliveries).await;
            prop_assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
            p.drain().await;
            // A body condition over hostile bodies: an answer, never a 5xx.
            let (status, diff) = p
                .operator("/v1/routes/diff", &json!({"routes_toml": FIXED_ROUTES,
                    "filter": {"where": [{"pointer": "/ref", "exists": true}]}}))
                .await;
            prop_assert_eq!(status, 200, "{}", diff);
            let request = format!("hostile-{n}");
            let (status, answer) = p
                .replay(json!({"request_id": request, "dry_run": false, "filter": {"source": "github"}}))
                .await;
            prop_assert_eq!(status, 200, "{}", answer);
            let stored = p.events_db.scalar("SELECT count(*) FROM events").await;
            prop_assert_eq!(answer["matched"].as_i64(), Some(stored));
            // Each stored event: one replayed task, ignore or quarantine record.
            let outcomes = p
                .count(&format!(
                    "SELECT (SELECT count(*) FROM replayed_tasks WHERE request_id = '{request}')
                          + (SELECT count(*) FROM quarantined_events q
                             WHERE convert_from(q.event, 'UTF8')::jsonb #>> '{{replay,request_id}}' = '{request}')"
                ))
                .await;
            prop_assert_eq!(outcomes, stored);
            Ok(())
        })?;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_task_has_a_trace_of_its_own_that_links_to_the_original_events() {
    let _exclusive = exclusive().await;
    let (receiver, telemetry) = telemetry();
    let p = pipeline().await;
    p.stored(vec![push(0, "main")]).await;
    let client = p.tasks_db.connect().await.unwrap();
    let original: String = client
        .query_one("SELECT split_part(traceparent, '-', 2) FROM tasks", &[])
        .await
        .unwrap()
        .get(0);
    let (status, answer) = p
        .replay(json!({"request_id": "traced", "dry_run": false}))
        .await;
    assert_eq!(
        (status, answer["created"].as_i64()),
        (200, Some(1)),
        "{answer}"
    );
    let replayed: String = client
        .query_one(
            "SELECT task_id FROM replayed_tasks WHERE request_id = 'traced'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The agent claims it: its claim joins the replay's trace.
    let claimed: Value = p
        .http
        .post(format!("{}/v1/agents/claim", p.dispatcher_url))
        .bearer_auth(AGENT_TOKEN)
        .json(&json!({"max_tasks": 2, "wait_secs": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claimed["tasks"].as_array().unwrap().len(), 2);

    let spans = flushed_spans(receiver, telemetry, |spans| {
        let names: Vec<&str> = spans
            .iter()
            .filter(|s| s.task_id.as_deref() == Some(replayed.as_str()))
            .map(|s| s.name.as_str())
            .collect();
        names.contains(&"task.replay") && names.contains(&"task.claim")
    })
    .await;
    let of = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.task_id.as_deref() == Some(replayed.as_str()))
            .unwrap_or_else(|| panic!("no {name} span for {replayed}"))
    };
    let replay = of("task.replay");
    assert_ne!(replay.trace_id, original, "a trace of its own");
    assert_eq!(
        replay.links,
        std::slice::from_ref(&original),
        "linked to the original event's trace"
    );
    assert_eq!(of("task.claim").trace_id, replay.trace_id);
    assert!(
        spans
            .iter()
            .filter(|s| s.trace_id == original)
            .all(|s| s.task_id.as_deref() != Some(replayed.as_str())),
        "the original's trace holds nothing of the replay"
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
