use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_reporter::push::Pusher;
use agent_reporter::settings::AgentSettings;
use rave_service::auth::token_digest;
use rave_service::clock::ManualClock;
use serde_json::{Value, json};
use test_support::pg::{PgCluster, TestDatabase};

pub use test_support::metrics::sample;

/// An agent's `agent_jobs_total` in the Pushgateway's exposition (the
/// first of its series), `None` when its group is not there.
pub fn jobs_of(exposition: &str, agent: &str) -> Option<f64> {
    test_support::pushgateway::find_sample(exposition, "agent_jobs_total", &[("agent", agent)])
}

pub const TTL_SECS: u64 = 3600;
pub const RETENTION_HOURS: u64 = 2;

pub struct TestReporter {
    pub url: String,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub pusher: Option<Pusher>,
    pub handle: rave_service::served::StopHandle,
    pub stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn token(agent: &str) -> String {
    format!("token-of-{agent}")
}

pub async fn spawn_reporter(pushgateway: Option<&str>) -> TestReporter {
    let db = PgCluster::shared()
        .create_database()
        .await
        .expect("test database");
    spawn_reporter_on(db, pushgateway).await
}

pub async fn spawn_reporter_on(db: TestDatabase, pushgateway: Option<&str>) -> TestReporter {
    spawn_reporter_with(db, pushgateway, |_| {}).await
}

/// A reporter over `db` with `adjust` applied to the test settings.
pub async fn spawn_reporter_with(
    db: TestDatabase,
    pushgateway: Option<&str>,
    adjust: impl FnOnce(&mut agent_reporter::Settings),
) -> TestReporter {
    rave_service::telemetry::init_for_tests();
    let mut settings: agent_reporter::Settings =
        rave_service::settings::load_with_env(None, Some(HashMap::new())).expect("defaults load");
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.database = db.settings();
    settings.pushgateway.url = pushgateway.map(str::to_owned);
    settings.pushgateway.group_ttl_secs = TTL_SECS;
    settings.limits.max_series_per_agent = 60;
    settings.limits.report_retention_hours = RETENTION_HOURS;
    settings.agents = ["agent-1", "agent-2"]
        .iter()
        .map(|name| AgentSettings {
            name: name.to_string(),
            token_sha256: hex::encode(token_digest(&token(name))),
            kinds: vec!["review".into()],
        })
        .collect();
    adjust(&mut settings);
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let app = agent_reporter::Application::build_with(settings, Arc::new(clock.clone()), false)
        .await
        .expect("agent-reporter builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let pusher = app.pusher();
    let handle = app.handle();
    let stopped = tokio::spawn(app.run_until_stopped());
    TestReporter {
        url,
        db,
        http: reqwest::Client::new(),
        clock,
        pusher,
        handle,
        stopped,
    }
}

pub fn report(status: &str, duration: f64) -> Value {
    json!({
        "task_id": rave_service::ids::TaskId::generate(),
        "kind": "review",
        "status": status,
        "started_at": "2026-11-27T10:00:00Z",
        "duration_seconds": duration,
    })
}

impl TestReporter {
    pub async fn post(&self, agent: &str, body: &Value) -> (u16, Value) {
        self.post_raw(agent, body.to_string()).await
    }

    pub async fn post_raw(&self, agent: &str, body: String) -> (u16, Value) {
        self.post_to("/v1/reports", agent, body).await
    }

    /// `POST /v1/reports/batch` with `reports` (each a JSON value).
    pub async fn post_batch(&self, agent: &str, reports: &[Value]) -> (u16, Value) {
        let body = json!({ "reports": reports }).to_string();
        self.post_to("/v1/reports/batch", agent, body).await
    }

    pub async fn post_to(&self, path: &str, agent: &str, body: String) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token(agent))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> String {
        test_support::metrics::scrape(&self.http, &self.url).await
    }

    pub fn pusher(&self) -> &Pusher {
        self.pusher.as_ref().expect("a Pushgateway is configured")
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}
