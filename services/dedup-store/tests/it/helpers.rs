use rave_service::settings::Secret;

use base64::Engine as _;
use dedup_store::{Application, Settings};
use rave_service::served::StopHandle;
use serde_json::{Value, json};
use test_support::pg::{PgCluster, TestDatabase};

pub struct TestStore {
    pub address: String,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    pub handle: StopHandle,
    /// Resolves once the server has stopped and the writers have drained.
    pub stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Default settings pointed at a fresh database, on a free port.
pub async fn settings_for(db: &TestDatabase) -> Settings {
    let mut settings: Settings =
        rave_service::settings::load_with_env(None, Some(test_support::test_env()))
            .expect("defaults load");
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.database = db.settings();
    settings.ingest_tokens = vec![Secret::new(test_support::INGEST_TOKEN)];
    settings.operator_tokens = vec![Secret::new(test_support::STORE_OPERATOR_TOKEN)];
    settings
}

/// A client that presents ingest's token on every request (as ingest does).
pub fn as_ingest() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", test_support::INGEST_TOKEN)
            .parse()
            .expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client")
}

pub async fn spawn_store() -> TestStore {
    let db = PgCluster::shared()
        .create_database()
        .await
        .expect("test database");
    let settings = settings_for(&db).await;
    spawn_with(db, settings).await
}

pub async fn spawn_with(db: TestDatabase, settings: Settings) -> TestStore {
    rave_service::telemetry::init_for_tests();
    // The relay does not run by itself: tests step it.
    let app = Application::build_with(settings, false)
        .await
        .expect("dedup-store builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let stopped = tokio::spawn(app.run_until_stopped());
    TestStore {
        address,
        db,
        http: as_ingest(),
        handle,
        stopped,
    }
}

pub fn event(source: &str, event_uuid: &str, body: &[u8]) -> Value {
    json!({
        "source": source,
        "event_uuid": event_uuid,
        "event_type": "push",
        "received_at": "2026-11-27T10:00:00Z",
        "headers": {"x-github-event": "push"},
        "body_base64": base64::engine::general_purpose::STANDARD.encode(body),
    })
}

impl TestStore {
    pub async fn post_event(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/events", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/events", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// A read, as an operator.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .bearer_auth(test_support::STORE_OPERATOR_TOKEN)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn metrics_text(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("metrics body")
    }
}

pub use test_support::metrics::sample;

pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("JSON error body");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned()
}
