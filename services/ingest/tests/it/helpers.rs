use ingest::settings::{SourceKind, SourceSettings};
use rave_service::settings::Secret;
use serde_json::Value;
use test_support::pg::{PgCluster, TestDatabase};
use test_support::sign;

pub const GITHUB_SECRET: &str = "github-test-secret";
pub const GITLAB_TOKEN: &str = "gitlab-plain-token";
pub const ALERTMANAGER_TOKEN: &str = "alertmanager-bearer-token";

pub struct TestStack {
    pub ingest: String,
    #[allow(dead_code)] // for tests that talk to dedup-store directly
    pub store: String,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    pub standard_secret: String,
    pub gitlab_signing_secret: String,
}

pub fn source(kind: SourceKind, secrets: Vec<&str>, tokens: Vec<&str>) -> SourceSettings {
    SourceSettings {
        kind,
        secrets: secrets.into_iter().map(Secret::new).collect(),
        secret: None,
        tokens: tokens.into_iter().map(Secret::new).collect(),
        token: None,
        require_signature: false,
        timestamp_tolerance_secs: None,
        hmac: None,
    }
}

pub fn ingest_settings(
    store_url: &str,
    standard_secret: &str,
    gitlab_signing: &str,
) -> ingest::Settings {
    let mut settings: ingest::Settings =
        rave_service::settings::load_with_env(None, Some(test_support::test_env()))
            .expect("defaults load");
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.store.url = store_url.to_owned();
    settings.sources.insert(
        "github".into(),
        source(SourceKind::Github, vec![GITHUB_SECRET], vec![]),
    );
    settings.sources.insert(
        "gitlab".into(),
        source(SourceKind::Gitlab, vec![gitlab_signing], vec![GITLAB_TOKEN]),
    );
    settings.sources.insert(
        "billing".into(),
        source(SourceKind::Standard, vec![standard_secret], vec![]),
    );
    settings.sources.insert(
        "alertmanager".into(),
        source(SourceKind::Alertmanager, vec![], vec![ALERTMANAGER_TOKEN]),
    );
    settings
}

pub async fn spawn_store(db: &TestDatabase) -> String {
    let mut settings: dedup_store::Settings =
        rave_service::settings::load_with_env(None, Some(test_support::test_env()))
            .expect("defaults load");
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.database = db.settings();
    settings.ingest_tokens = vec![rave_service::settings::Secret::new(
        test_support::INGEST_TOKEN,
    )];
    let app = dedup_store::Application::build(settings)
        .await
        .expect("dedup-store builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    url
}

pub async fn spawn_ingest(settings: ingest::Settings) -> String {
    let app = ingest::Application::build(settings)
        .await
        .expect("ingest builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    url
}

/// dedup-store and ingest on a fresh database.
pub async fn spawn_stack() -> TestStack {
    spawn_stack_with(|_| {}).await
}

pub async fn spawn_stack_with(adjust: impl FnOnce(&mut ingest::Settings)) -> TestStack {
    rave_service::telemetry::init_for_tests();
    let db = PgCluster::shared()
        .create_database()
        .await
        .expect("test database");
    let store = spawn_store(&db).await;
    let standard_secret = sign::new_whsec();
    let gitlab_signing_secret = sign::new_whsec();
    let mut settings = ingest_settings(&store, &standard_secret, &gitlab_signing_secret);
    adjust(&mut settings);
    let ingest = spawn_ingest(settings).await;
    TestStack {
        ingest,
        store,
        db,
        http: reqwest::Client::new(),
        standard_secret,
        gitlab_signing_secret,
    }
}

impl TestStack {
    pub fn github(&self, delivery: &str, body: &[u8]) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/hooks/github", self.ingest))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign::github(GITHUB_SECRET, body))
            .body(body.to_vec())
    }

    pub fn standard(&self, id: &str, body: &[u8]) -> reqwest::RequestBuilder {
        let now = sign::now_unix();
        self.http
            .post(format!("{}/hooks/billing", self.ingest))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header(
                "webhook-signature",
                sign::standard(&self.standard_secret, id, now, body),
            )
            .body(body.to_vec())
    }

    pub fn gitlab_signed(&self, id: &str, body: &[u8]) -> reqwest::RequestBuilder {
        let now = sign::now_unix();
        self.http
            .post(format!("{}/hooks/gitlab", self.ingest))
            .header("content-type", "application/json")
            .header("x-gitlab-event", "Merge Request Hook")
            .header("idempotency-key", id)
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header(
                "webhook-signature",
                sign::standard(&self.gitlab_signing_secret, id, now, body),
            )
            .header("x-gitlab-token", GITLAB_TOKEN)
            .body(body.to_vec())
    }

    pub fn gitlab_token(&self, id: &str, token: &str, body: &[u8]) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/hooks/gitlab", self.ingest))
            .header("content-type", "application/json")
            .header("x-gitlab-event", "Push Hook")
            .header("idempotency-key", id)
            .header("x-gitlab-token", token)
            .body(body.to_vec())
    }

    /// A notification as Alertmanager's webhook receiver sends it.
    pub fn alertmanager(&self, token: &str, body: &[u8]) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/hooks/alertmanager", self.ingest))
            .header("content-type", "application/json")
            .header("user-agent", "Alertmanager/0.25.0")
            .bearer_auth(token)
            .body(body.to_vec())
    }

    pub async fn metrics(&self) -> String {
        test_support::metrics::scrape(&self.http, &self.ingest).await
    }

    pub async fn stored_count(&self) -> i64 {
        let db = self.db.connect().await.unwrap();
        db.query_one("SELECT count(*) FROM events", &[])
            .await
            .unwrap()
            .get(0)
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

pub use test_support::metrics::sample;

/// Until ingest at `url` holds a request body in flight (its handler runs):
/// polls `/metrics`, as the request is another connection's.
pub async fn eventually_in_flight(http: &reqwest::Client, url: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = test_support::metrics::scrape(http, url).await;
        if sample(&text, "ingest_in_flight_body_bytes") > 0.0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no request in flight");
        tokio::task::yield_now().await;
    }
}
