//! No content can stop the pipeline, shown with generated deliveries:
//! correctly signed webhooks whose bodies are hostile but plausible (NUL and
//! other control escapes, unpaired surrogates, 10k-character strings at the
//! routing rules' pointers, deep nesting, huge numbers, duplicate keys,
//! empty, non-JSON and invalid UTF-8 bodies), interleaved with ordinary
//! ones, go through ingest, dedup-store, the relay (stepped here) and
//! task-dispatcher, whose rules take entity keys from those very fields.
//! Then agents complete the tasks with results, some unstorable, sent
//! together so they share group-commit batches.
//!
//! Holds: no delivery gets a 5xx; every accepted delivery has exactly one
//! outcome and every one of them is a task; the outbox drains; storable
//! completions succeed and unstorable ones get 400 beside them.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt as _;
use proptest::prelude::*;
use rave_service::settings::Secret;
use serde_json::{Value, json};
use test_support::pg::{PgCluster, TestDatabase};
use test_support::sign;

use crate::helpers::*;

/// Cases × deliveries per case: at least 10,000 deliveries per run.
const CASES: u32 = 20;
const PER_CASE: usize = 500;

const ROUTES: &str = r#"
[[routes]]
source = "github"
event_types = ["pull_request"]
kind = "webhook"
entity_key = ["/pr"]
policy = "supersede"

[[routes]]
source = "github"
event_types = ["issues"]
kind = "webhook"
entity_key = ["/issue/title", "/issue/labels"]
policy = "serialize"

[[routes]]
kind = "webhook"
"#;

/// One generated delivery: its event type and raw body.
#[derive(Debug, Clone)]
struct Delivery {
    event_type: &'static str,
    body: Vec<u8>,
    hostile: bool,
}

/// A JSON string literal (with its quotes) that is hostile but plausible.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""a\u0000b""#.to_owned()),
        "[\u{1}-\u{1f}]{1,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just(r#""\ud800 lone""#.to_owned()),
        Just(r#""\udc00""#.to_owned()),
        (10_000usize..14_000).prop_map(|n| format!("\"{}\"", "é".repeat(n / 2))),
        "\\PC{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

fn delivery() -> impl Strategy<Value = Delivery> {
    let ordinary = (0u32..1_000_000).prop_map(|n| Delivery {
        event_type: "push",
        body: format!(r#"{{"ref":"refs/heads/main","n":{n}}}"#).into_bytes(),
        hostile: false,
    });
    let at_pointer = hostile_string().prop_map(|s| Delivery {
        event_type: "pull_request",
        body: format!(r#"{{"pr":{s},"title":{s}}}"#).into_bytes(),
        hostile: true,
    });
    let in_issue = (hostile_string(), hostile_string()).prop_map(|(t, l)| Delivery {
        event_type: "issues",
        body: format!(r#"{{"issue":{{"title":{t},"labels":[{l},{{"k\u0000":1}}]}}}}"#).into_bytes(),
        hostile: true,
    });
    let shapes = prop_oneof![
        (1usize..=120)
            .prop_map(|d| format!(r#"{{"pr":{}1{}}}"#, "[".repeat(d), "]".repeat(d)).into_bytes()),
        Just(br#"{"pr":1e999}"#.to_vec()),
        Just(br#"{"pr":123456789012345678901234567890123456789}"#.to_vec()),
        Just(br#"{"pr":"a","pr":"b","pr":{"x":"\u0000"}}"#.to_vec()),
        Just(Vec::new()),
        Just(b"not json at all".to_vec()),
        prop::collection::vec(any::<u8>(), 1..200),
        Just(vec![0xff, 0xfe, b'{', 0x80]),
    ]
    .prop_map(|body| Delivery {
        event_type: "pull_request",
        body,
        hostile: true,
    });
    prop_oneof![3 => ordinary, 2 => at_pointer, 1 => in_issue, 2 => shapes]
}

const PRESET_SECRET: &str = "whsec_content-preset-secret";

struct Pipeline {
    ingest_url: String,
    dispatcher_url: String,
    relay: dedup_store::relay::Relay,
    events_db: TestDatabase,
    tasks_db: TestDatabase,
    http: reqwest::Client,
}

async fn pipeline() -> Pipeline {
    pipeline_with(&[]).await
}

/// [`pipeline`] whose ingest also has a source of each of these preset
/// kinds, each with `PRESET_SECRET`.
async fn pipeline_with(presets: &[&str]) -> Pipeline {
    let cluster = PgCluster::shared();
    let tasks_db = cluster.create_database().await.unwrap();
    let events_db = cluster.create_database().await.unwrap();

    let mut dispatcher: task_dispatcher::Settings = defaults();
    dispatcher.server.port = 0;
    dispatcher.database = tasks_db.settings();
    let routes = toml::from_str::<toml::Table>(ROUTES).unwrap()["routes"].clone();
    dispatcher.routes = routes.try_into().unwrap();
    dispatcher.agents = vec![agent()];
    dispatcher.relay_tokens = vec![Secret::new(RELAY_TOKEN)];
    let app = task_dispatcher::Application::build(dispatcher)
        .await
        .unwrap();
    let dispatcher_url = serve(app.port(), app.run_until_stopped()).await;

    // The relay is stepped by the test, not run in the background.
    let (relay, store_url) = stepped_store(&events_db, 0, &dispatcher_url).await;

    // Each preset's source is named after its kind.
    let sources = presets.iter().map(|kind| {
        let settings = format!("kind = \"{kind}\"\nsecret = \"{PRESET_SECRET}\"");
        ((*kind).to_owned(), toml::from_str(&settings).unwrap())
    });
    let (_, ingest_url) = ingest_with(store_url, sources).await;
    Pipeline {
        ingest_url,
        dispatcher_url,
        relay,
        events_db,
        tasks_db,
        http: reqwest::Client::new(),
    }
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    db.scalar(sql).await
}

static DELIVERY: AtomicUsize = AtomicUsize::new(0);

/// Sends the deliveries, 16 at a time; each answer's (status, task id).
async fn send_all(p: &Pipeline, deliveries: &[Delivery]) -> Vec<(u16, Option<String>)> {
    futures_util::stream::iter(deliveries.iter().map(|d| {
        let id = format!("content-{}", DELIVERY.fetch_add(1, Ordering::Relaxed));
        p.http
            .post(format!("{}/hooks/github", p.ingest_url))
            .header("x-github-event", d.event_type)
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", sign::github(GITHUB_SECRET, &d.body))
            .body(d.body.clone())
            .send()
    }))
    .buffered(16)
    .then(|r| async move {
        let r = r.expect("ingest answers");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, body["task_id"].as_str().map(str::to_owned))
    })
    .collect()
    .await
}

async fn drain(p: &Pipeline) {
    while p.relay.relay_once().await.expect("the relay step") > 0 {}
}

/// Claims up to `n` tasks as the e2e agent.
async fn claim(p: &Pipeline, n: usize) -> Vec<Value> {
    let answer = p
        .http
        .post(format!("{}/v1/agents/claim", p.dispatcher_url))
        .bearer_auth(AGENT_TOKEN)
        .json(&json!({"max_tasks": n, "wait_secs": 0}))
        .send()
        .await
        .unwrap();
    if answer.status() == 204 {
        return Vec::new();
    }
    let body: Value = answer.json().await.unwrap();
    body["tasks"].as_array().unwrap().clone()
}

async fn complete(p: &Pipeline, task: &Value, result: &Value) -> u16 {
    p.http
        .post(format!(
            "{}/v1/tasks/{}/complete",
            p.dispatcher_url,
            task["task_id"].as_str().unwrap()
        ))
        .bearer_auth(AGENT_TOKEN)
        .json(&json!({"lease_token": task["lease_token"], "result": result}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The tests' own runtime: proptest's cases are synchronous.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn generated_hostile_deliveries_never_get_a_5xx_and_each_becomes_exactly_one_task() {
    let runtime = runtime();
    let _exclusive = runtime.block_on(exclusive());
    let p = runtime.block_on(pipeline());
    let sent = AtomicUsize::new(0);
    let hostile = AtomicUsize::new(0);
    let config = ProptestConfig {
        cases: CASES,
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    };
    proptest!(config, |(deliveries in prop::collection::vec(delivery(), PER_CASE), poison in prop::collection::vec(any::<bool>(), 40))| {
        runtime.block_on(async {
            let answers = send_all(&p, &deliveries).await;
            sent.fetch_add(deliveries.len(), Ordering::Relaxed);
            hostile.fetch_add(deliveries.iter().filter(|d| d.hostile).count(), Ordering::Relaxed);
            for ((status, _), d) in answers.iter().zip(&deliveries) {
                prop_assert!(*status < 500, "{status} for {d:?}");
                prop_assert!(*status == 202, "a correctly signed delivery is accepted: {status} for {d:?}");
            }
            drain(&p).await;
            prop_assert_eq!(count(&p.events_db, "SELECT count(*) FROM outbox").await, 0);
            prop_assert_eq!(count(&p.events_db, "SELECT count(*) FROM outbox_refused").await, 0);
            // Exactly one outcome per stored event, and here it is a task.
            let stored = count(&p.events_db, "SELECT count(*) FROM events").await;
            let tasks = count(&p.tasks_db, "SELECT count(*) FROM tasks").await;
            let others = count(&p.tasks_db, "SELECT (SELECT count(*) FROM ignored_events) + (SELECT count(*) FROM quarantined_events)").await;
            prop_assert_eq!((tasks, others), (stored, 0));
            let client = p.tasks_db.connect().await.unwrap();
            for (_, task_id) in &answers {
                let task_id = task_id.as_deref().expect("a receipt names its task");
                let found = client.query_opt("SELECT 1 FROM tasks WHERE task_id = $1", &[&task_id]).await.unwrap();
                prop_assert!(found.is_some(), "no task {}", task_id);
            }

            // Agents: completions sent together, some unstorable.
            let claimed = claim(&p, poison.len()).await;
            let results: Vec<Value> = claimed.iter().zip(&poison).map(|(t, bad)| if *bad {
                json!({"summary": format!("done\u{0}{}", t["task_id"])})
            } else {
                json!({"summary": "done", "task": t["task_id"]})
            }).collect();
            let statuses = futures_util::future::join_all(
                claimed.iter().zip(&results).map(|(t, r)| complete(&p, t, r)),
            ).await;
            for ((status, bad), task) in statuses.iter().zip(&poison).zip(&claimed) {
                prop_assert_eq!(*status, if *bad { 400 } else { 200 }, "{}", task);
            }
            // A refused completion leaves the lease: a storable one succeeds.
            for ((status, task), _) in statuses.iter().zip(&claimed).zip(&poison).filter(|((s, _), _)| **s == 400) {
                let _ = status;
                prop_assert_eq!(complete(&p, task, &json!("ok")).await, 200);
            }
            Ok(())
        })?;
    });
    let (sent, hostile) = (sent.into_inner(), hostile.into_inner());
    eprintln!(
        "content-level hostile input: {sent} correctly signed deliveries ({hostile} hostile) through the whole pipeline, each one task; none got a 5xx"
    );
    assert!(sent >= 10_000, "{sent}");
}

/// A Stripe, PagerDuty or Slack delivery whose id and type (read from the
/// signed body) and payload may each be hostile.
fn preset_delivery() -> impl Strategy<Value = (&'static str, Option<String>, Vec<u8>)> {
    let id = prop_oneof![
        3 => (0u32..1_000_000).prop_map(|n| format!("\"evt_{n}\"")),
        2 => hostile_string(),
        1 => Just("12345".to_owned()),
        1 => Just("{\"nested\":1}".to_owned()),
    ];
    let kind = prop_oneof![3 => Just("\"invoice.paid\"".to_owned()), 1 => hostile_string()];
    let payload = prop_oneof![2 => Just("{}".to_owned()), 1 => hostile_string()];
    (0usize..3, id, kind, payload).prop_map(|(p, id, kind, payload)| {
        let (provider, body) = match p {
            0 => ("stripe", format!(r#"{{"id":{id},"type":{kind},"data":{{"object":{payload}}}}}"#)),
            1 => ("pagerduty", format!(r#"{{"event":{{"id":{id},"event_type":{kind},"data":{payload}}}}}"#)),
            _ => ("slack", format!(r#"{{"type":"event_callback","event_id":{id},"event":{{"type":{kind},"text":{payload}}}}}"#)),
        };
        // The id as the provider means it, when it is a plain string.
        let plain = serde_json::from_str::<String>(&id).ok();
        (provider, plain, body.into_bytes())
    })
}

#[test]
fn generated_hostile_preset_deliveries_are_stored_once_or_refused_with_a_4xx_and_never_block_the_rest()
 {
    use rave_service::sign::providers::{self, Event};
    let runtime = runtime();
    let _exclusive = runtime.block_on(exclusive());
    let p = runtime.block_on(pipeline_with(&["stripe", "pagerduty", "slack"]));
    let (sent, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let config = ProptestConfig {
        cases: 10,
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    };
    proptest!(config, |(deliveries in prop::collection::vec(preset_delivery(), 200))| {
        runtime.block_on(async {
            let now = sign::now_unix();
            let answers: Vec<(u16, Value)> = futures_util::stream::iter(deliveries.iter().map(|(provider, _, body)| {
                let signed = providers::delivery(provider, PRESET_SECRET, Event { id: "unused", event_type: None, now, body: Some(body) }).unwrap();
                let mut request = p.http.post(format!("{}/hooks/{provider}", p.ingest_url)).body(signed.body);
                for (name, value) in &signed.headers {
                    request = request.header(*name, value);
                }
                request.send()
            }))
            .buffered(16)
            .then(|r| async move {
                let r = r.expect("ingest answers");
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            })
            .collect()
            .await;
            sent.fetch_add(deliveries.len(), Ordering::Relaxed);
            let mut accepted = std::collections::HashSet::new();
            for ((status, answer), (provider, id, body)) in answers.iter().zip(&deliveries) {
                let body = String::from_utf8_lossy(body);
                prop_assert!(*status < 500, "{status} {answer} for {provider} {body}");
                if *status == 400 {
                    refused.fetch_add(1, Ordering::Relaxed);
                    prop_assert_eq!(&answer["error"]["code"], &json!("malformed_body"), "{} {}", provider, body);
                } else {
                    prop_assert!(*status == 202 || *status == 200, "{status} {answer} for {provider} {body}");
                    // The dedup key is the id the provider signed in the body.
                    let delivery = answer["delivery_id"].as_str().unwrap().to_owned();
                    if let Some(id) = id {
                        prop_assert_eq!(&delivery, id);
                    }
                    accepted.insert((provider.to_string(), delivery));
                }
            }
            drain(&p).await;
            prop_assert_eq!(count(&p.events_db, "SELECT count(*) FROM outbox").await, 0);
            let client = p.events_db.connect().await.unwrap();
            for (provider, delivery) in &accepted {
                let stored: i64 = client.query_one(
                    "SELECT count(*) FROM events WHERE source = $1 AND event_uuid = $2",
                    &[provider, delivery],
                ).await.unwrap().get(0);
                prop_assert_eq!(stored, 1, "{} {}", provider, delivery);
            }
            // Every stored event became exactly one outcome.
            let stored = count(&p.events_db, "SELECT count(*) FROM events").await;
            let outcomes = count(&p.tasks_db, "SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM ignored_events) + (SELECT count(*) FROM quarantined_events)").await;
            prop_assert_eq!(outcomes, stored);
            Ok(())
        })?;
    });
    let (sent, refused) = (sent.into_inner(), refused.into_inner());
    eprintln!(
        "preset deliveries with hostile signed content: {sent} sent, {refused} refused with 400 malformed_body, the rest stored once each and each one outcome; none got a 5xx"
    );
    assert!(refused > 0 && refused < sent, "{refused} of {sent}");
}
