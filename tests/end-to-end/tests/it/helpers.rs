//! Shared set-up: the services of one pipeline in this process, and the
//! process-wide telemetry exporting to an OTLP receiver.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
pub use rave_service::auth::{AgentSettings, token_digest};
use rave_service::settings::TelemetrySettings;
use test_support::otlp::OtlpReceiver;
use test_support::sign;

pub const AGENT_TOKEN: &str = "token-of-e2e-agent";
pub const RELAY_TOKEN: &str = "relay-token-e2e";
pub const GITHUB_SECRET: &str = "e2e-github-secret";

pub fn defaults<S: rave_service::settings::ServiceSettings>() -> S {
    rave_service::settings::load_with_env(None, Some(test_support::test_env()))
        .expect("defaults load")
}

pub fn agent() -> AgentSettings {
    AgentSettings {
        name: "e2e".into(),
        token_sha256: hex::encode(token_digest(AGENT_TOKEN)),
        kinds: vec!["webhook".into()],
    }
}

pub async fn serve<F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static>(
    port: u16,
    run: F,
) -> String {
    tokio::spawn(run);
    format!("http://127.0.0.1:{port}")
}

/// A span as exported: name, trace id, its `task_id` attribute and the
/// trace ids it links to.
#[derive(Debug)]
pub struct Span {
    pub name: String,
    pub trace_id: String,
    pub task_id: Option<String>,
    pub links: Vec<String>,
}

pub fn spans(receiver: &OtlpReceiver) -> Vec<Span> {
    let mut out = Vec::new();
    for export in receiver.exports() {
        let request =
            ExportTraceServiceRequest::decode(export.body.as_slice()).expect("OTLP protobuf");
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let task_id = span
                        .attributes
                        .iter()
                        .find(|a| a.key == "task_id")
                        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                            AnyValue::StringValue(s) => Some(s.clone()),
                            _ => None,
                        });
                    out.push(Span {
                        name: span.name,
                        trace_id: hex::encode(span.trace_id),
                        task_id,
                        links: span
                            .links
                            .iter()
                            .map(|l| hex::encode(&l.trace_id))
                            .collect(),
                    });
                }
            }
        }
    }
    out
}

/// Telemetry is process-wide: installed once, exporting to one receiver.
pub fn telemetry() -> &'static (OtlpReceiver, rave_service::telemetry::TelemetryGuard) {
    static ONCE: std::sync::OnceLock<(OtlpReceiver, rave_service::telemetry::TelemetryGuard)> =
        std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let receiver = OtlpReceiver::start().unwrap();
        let guard = rave_service::telemetry::init(
            "rave-e2e",
            &TelemetrySettings {
                otlp_endpoint: Some(receiver.endpoint.clone()),
                log_filter: "error".into(),
                ..TelemetrySettings::default()
            },
        )
        .unwrap();
        (receiver, guard)
    })
}

/// A dedup-store on `db` on `port` (0: any) whose relay feeds the
/// dispatcher at `dispatcher_url` and is stepped by the test: its relay and
/// URL.
pub async fn stepped_store(
    db: &test_support::pg::TestDatabase,
    port: u16,
    dispatcher_url: &str,
) -> (dedup_store::relay::Relay, String) {
    use rave_service::settings::Secret;
    let mut store: dedup_store::Settings = defaults();
    store.ingest_tokens = vec![Secret::new(test_support::INGEST_TOKEN)];
    store.operator_tokens = vec![Secret::new(test_support::STORE_OPERATOR_TOKEN)];
    store.server.port = port;
    store.database = db.settings();
    store.relay.dispatcher_url = Some(dispatcher_url.to_owned());
    store.relay.token = Some(Secret::new(RELAY_TOKEN));
    let app = dedup_store::Application::build_with(store, false)
        .await
        .unwrap();
    let relay = app.relay().expect("a relay");
    (relay, serve(app.port(), app.run_until_stopped()).await)
}

/// The spans exported so far, flushed again (at most 20 times: the batch
/// exporter sends from its own thread, and a flush gives up after its
/// timeout) until `enough` holds of them.
pub async fn flushed_spans(
    receiver: &'static OtlpReceiver,
    telemetry: &'static rave_service::telemetry::TelemetryGuard,
    enough: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    let mut found = Vec::new();
    for _ in 0..20 {
        tokio::task::spawn_blocking(move || telemetry.force_flush())
            .await
            .unwrap();
        found = spans(receiver);
        if enough(&found) {
            break;
        }
    }
    found
}

/// A github source whose secret is [`GITHUB_SECRET`].
pub fn github_source() -> ingest::settings::SourceSettings {
    toml::from_str(&format!("kind = \"github\"\nsecret = \"{GITHUB_SECRET}\"")).unwrap()
}

/// An ingest in this process with the github source, in front of the
/// dedup-store at `store_url`: its port and URL.
pub async fn github_ingest(store_url: String) -> (u16, String) {
    ingest_with(store_url, []).await
}

/// [`github_ingest`] with more sources.
pub async fn ingest_with(
    store_url: String,
    sources: impl IntoIterator<Item = (String, ingest::settings::SourceSettings)>,
) -> (u16, String) {
    let mut ingest: ingest::Settings = defaults();
    ingest.server.port = 0;
    ingest.store.url = store_url;
    ingest.sources.insert("github".into(), github_source());
    ingest.sources.extend(sources);
    let app = ingest::Application::build(ingest).await.unwrap();
    let port = app.port();
    (port, serve(port, app.run_until_stopped()).await)
}

/// A correctly signed GitHub delivery; with `traceparent`, its sender says
/// it is part of that trace of its own.
pub fn github_webhook(
    ingest_url: &str,
    delivery: &str,
    traceparent: Option<&str>,
) -> reqwest::RequestBuilder {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut request = reqwest::Client::new().post(format!("{ingest_url}/hooks/github"));
    if let Some(parent) = traceparent {
        request = request.header("traceparent", parent);
    }
    request
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", sign::github(GITHUB_SECRET, body))
        .body(body.to_vec())
}

/// The JSON answer to `request`.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Tests whose services share this process's one span exporter take this
/// lock: another test's burst of requests would fill the exporter's queue
/// and drop the spans a trace test counts.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A task-dispatcher on its own database that makes every event a `webhook`
/// task for the e2e agent, fed by a relay with [`RELAY_TOKEN`]; its URL.
pub async fn webhook_dispatcher(cluster: &test_support::pg::PgCluster) -> String {
    let mut dispatcher: task_dispatcher::Settings = defaults();
    dispatcher.server.port = 0;
    dispatcher.database = cluster.create_database().await.unwrap().settings();
    dispatcher.routes = vec![toml::from_str("kind = \"webhook\"").unwrap()];
    dispatcher.agents = vec![agent()];
    dispatcher.relay_tokens_sha256 = vec![hex::encode(token_digest(RELAY_TOKEN))];
    let app = task_dispatcher::Application::build(dispatcher)
        .await
        .unwrap();
    serve(app.port(), app.run_until_stopped()).await
}
