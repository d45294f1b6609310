use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rave_service::ids::TaskId;
use serde_json::{Value, json};
use task_dispatcher::auth::token_digest;
use task_dispatcher::clock::ManualClock;
use task_dispatcher::maintenance::Maintenance;
use task_dispatcher::settings::{AgentSettings, Settings};
use test_support::pg::{PgCluster, TestDatabase};

pub use test_support::metrics::sample;

pub const OPERATOR: &str = "operator-token";
pub const RELAY: &str = "relay-token";
pub const LEASE_SECS: u64 = 30;

pub struct TestDispatcher {
    pub url: String,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub maintenance: Maintenance,
    pub handle: rave_service::served::StopHandle,
    pub stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The settings it started with, and what applies new ones (SIGHUP's part).
    pub settings: Settings,
    pub reloader: task_dispatcher::reload::Reloader,
}

const ROUTES: &str = r#"
[[routes]]
source = "gitlab"
event_types = ["Merge Request Hook"]
kind = "review"
entity_key = ["/project/id", "/object_attributes/iid"]
policy = "supersede"

[[routes]]
source = "github"
event_types = ["pull_request"]
kind = "serial"
entity_key = ["/number"]
policy = "serialize"

[[routes]]
event_types = ["push"]
kind = "build"
priority = 5
max_attempts = 3

[[routes]]
event_types = ["urgent"]
kind = "build"
priority = 1
max_attempts = 3
"#;

fn hex(d: [u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn agent_token(name: &str) -> String {
    format!("token-of-{name}")
}

pub async fn spawn_dispatcher() -> TestDispatcher {
    let db = PgCluster::shared()
        .create_database()
        .await
        .expect("test database");
    spawn_dispatcher_on(db).await
}

/// Another replica over `db` (each replica has its own clock).
pub async fn spawn_dispatcher_on(db: TestDatabase) -> TestDispatcher {
    spawn_dispatcher_with(db, |_| {}).await
}

/// A dispatcher over `db` with `adjust` applied to the test settings.
pub async fn spawn_dispatcher_with(
    db: TestDatabase,
    adjust: impl FnOnce(&mut Settings),
) -> TestDispatcher {
    rave_service::telemetry::init_for_tests();
    let mut settings: Settings =
        rave_service::settings::load_with_env(None, Some(HashMap::new())).expect("defaults load");
    #[derive(serde::Deserialize)]
    struct Routes {
        routes: Vec<task_dispatcher::settings::RouteSettings>,
    }
    settings.routes = toml::from_str::<Routes>(ROUTES).unwrap().routes;
    settings.server.port = 0;
    settings.server.workers = 2;
    // A stop that waited on a parked claim would cut its connection after
    // a second instead of answering it.
    settings.server.shutdown_timeout_secs = 1;
    settings.database = db.settings();
    settings.claim.lease_secs = LEASE_SECS;
    // Tests read /metrics right after a change.
    settings.maintenance.gauges_max_age_ms = 0;
    settings.retry.base_secs = 10.0;
    settings.retry.max_secs = 100.0;
    settings.retry.jitter = 0.1;
    let all = ["review", "serial", "build"];
    settings.agents = (0..20)
        .map(|i| format!("agent-{i}"))
        .chain(["builder".to_owned()])
        .map(|name| AgentSettings {
            token_sha256: hex(token_digest(&agent_token(&name))),
            kinds: if name == "builder" {
                vec!["build".into()]
            } else {
                all.map(String::from).to_vec()
            },
            name,
        })
        .collect();
    settings.operator_tokens_sha256 = vec![hex(token_digest(OPERATOR))];
    // In clear, as a NixOS host passes it (a credential file): hashed at start.
    settings.relay_tokens = vec![rave_service::settings::Secret::new(RELAY)];

    adjust(&mut settings);
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let started_with = settings.clone();
    let app = task_dispatcher::Application::build_with(settings, Arc::new(clock.clone()), false)
        .await
        .expect("task-dispatcher builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let maintenance = app.maintenance();
    let handle = app.handle();
    let reloader = app.reloader();
    let stopped = tokio::spawn(app.run_until_stopped());
    TestDispatcher {
        url,
        db,
        http: reqwest::Client::new(),
        clock,
        maintenance,
        handle,
        stopped,
        settings: started_with,
        reloader,
    }
}

/// An event as dedup-store's relay sends it.
pub fn event(source: &str, event_type: &str, body: Value) -> Value {
    use base64::Engine as _;
    json!({
        "task_id": TaskId::generate(),
        "source": source,
        "event_uuid": format!("uuid-{}", TaskId::generate()),
        "event_type": event_type,
        "received_at": "2026-11-27T10:00:00Z",
        "trace_id": test_support::trace::random_trace_id(),
        "headers": {"content-type": "application/json"},
        "body_base64": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
    })
}

pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

impl TestDispatcher {
    pub async fn handoff(&self, events: &[Value]) -> Value {
        let (status, body) = send(
            self.http
                .post(format!("{}/v1/internal/events", self.url))
                .bearer_auth(RELAY)
                .json(&json!({ "events": events })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Creates one `build` task and returns its id.
    pub async fn push_task(&self) -> String {
        let e = event("github", "push", json!({"ref": "refs/heads/main"}));
        self.handoff(std::slice::from_ref(&e)).await;
        e["task_id"].as_str().unwrap().to_owned()
    }

    pub async fn claim(&self, agent: &str, body: Value) -> (u16, Value) {
        send(
            self.http
                .post(format!("{}/v1/agents/claim", self.url))
                .bearer_auth(agent_token(agent))
                .json(&body),
        )
        .await
    }

    /// Claims without waiting; returns the tasks (empty on 204).
    pub async fn claim_now(&self, agent: &str, max: i64) -> Vec<Value> {
        let (status, body) = self
            .claim(agent, json!({"max_tasks": max, "wait_secs": 0}))
            .await;
        match status {
            200 => body["tasks"].as_array().unwrap().clone(),
            204 => Vec::new(),
            other => panic!("claim answered {other}: {body}"),
        }
    }

    pub async fn lease_call(
        &self,
        agent: &str,
        task: &Value,
        action: &str,
        extra: Value,
    ) -> (u16, Value) {
        let mut body = json!({ "lease_token": task["lease_token"] });
        if let Value::Object(extra) = extra {
            body.as_object_mut().unwrap().extend(extra);
        }
        send(
            self.http
                .post(format!(
                    "{}/v1/tasks/{}/{action}",
                    self.url,
                    task["task_id"].as_str().unwrap()
                ))
                .bearer_auth(agent_token(agent))
                .json(&body),
        )
        .await
    }

    pub async fn operator_get(&self, path: &str) -> (u16, Value) {
        send(
            self.http
                .get(format!("{}{path}", self.url))
                .bearer_auth(OPERATOR),
        )
        .await
    }

    pub async fn operator_post(&self, path: &str) -> (u16, Value) {
        send(
            self.http
                .post(format!("{}{path}", self.url))
                .bearer_auth(OPERATOR),
        )
        .await
    }

    pub async fn task(&self, task_id: &str) -> Value {
        let (status, body) = self.operator_get(&format!("/v1/tasks/{task_id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn metrics(&self) -> String {
        test_support::metrics::scrape(&self.http, &self.url).await
    }

    pub fn clock_now(&self) -> time::OffsetDateTime {
        use task_dispatcher::clock::Clock as _;
        self.clock.now()
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

impl TestDispatcher {
    /// A long-poll claim by `agent` (waiting up to `wait_secs`), returned
    /// once it is parked waiting for work; await it for its answer.
    pub async fn parked_claim(
        &self,
        agent: &str,
        wait_secs: u64,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let request = self
            .http
            .post(format!("{}/v1/agents/claim", self.url))
            .bearer_auth(agent_token(agent))
            .json(&json!({ "wait_secs": wait_secs }));
        let waiting = tokio::spawn(send(request));
        // Wait for the condition, not for time: the claim is parked.
        while sample(&self.metrics().await, "dispatcher_agents_waiting") < 1.0 {
            tokio::task::yield_now().await;
        }
        waiting
    }
}

/// An agent claiming up to 10 tasks at a time at `claim_at` and completing
/// each at `complete_at` (base URLs; the same replica or two), until a claim
/// finds nothing. Returns the ids it completed, in order.
pub async fn drain_as(
    http: reqwest::Client,
    agent: String,
    claim_at: String,
    complete_at: String,
) -> Vec<String> {
    let mut completed = Vec::new();
    loop {
        let response = http
            .post(format!("{claim_at}/v1/agents/claim"))
            .bearer_auth(agent_token(&agent))
            .json(&json!({"max_tasks": 10, "wait_secs": 0}))
            .send()
            .await
            .unwrap();
        if response.status() == 204 {
            return completed;
        }
        let body: Value = response.json().await.unwrap();
        for task in body["tasks"].as_array().unwrap() {
            let id = task["task_id"].as_str().unwrap().to_owned();
            let done = http
                .post(format!("{complete_at}/v1/tasks/{id}/complete"))
                .bearer_auth(agent_token(&agent))
                .json(&json!({"lease_token": task["lease_token"], "result": {"by": agent}}))
                .send()
                .await
                .unwrap();
            assert_eq!(done.status(), 200);
            completed.push(id);
        }
    }
}
