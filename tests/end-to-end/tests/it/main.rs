//! One webhook's whole life in one process, exported to an OTLP receiver:
//! every span of it shares one trace id and carries the task's `task_id`.

use std::collections::{BTreeSet, HashMap};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use rave_service::auth::{AgentSettings, token_digest};
use rave_service::settings::{Secret, TelemetrySettings};
use test_support::otlp::OtlpReceiver;
use test_support::pg::PgCluster;
use test_support::sign;

const AGENT_TOKEN: &str = "token-of-e2e-agent";
const RELAY_TOKEN: &str = "relay-token-e2e";
const GITHUB_SECRET: &str = "e2e-github-secret";

fn defaults<S: rave_service::settings::ServiceSettings>() -> S {
    rave_service::settings::load_with_env(None, Some(HashMap::new())).expect("defaults load")
}

fn agent() -> AgentSettings {
    AgentSettings {
        name: "e2e".into(),
        token_sha256: hex::encode(token_digest(AGENT_TOKEN)),
        kinds: vec!["webhook".into()],
    }
}

async fn serve<F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static>(
    port: u16,
    run: F,
) -> String {
    tokio::spawn(run);
    format!("http://127.0.0.1:{port}")
}

/// A span as exported: name, trace id, and its `task_id` attribute.
#[derive(Debug)]
struct Span {
    name: String,
    trace_id: String,
    task_id: Option<String>,
}

fn spans(receiver: &OtlpReceiver) -> Vec<Span> {
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
                    });
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_whole_life_is_one_trace_whose_spans_carry_its_task_id() {
    let receiver = OtlpReceiver::start().unwrap();
    let telemetry = rave_service::telemetry::init(
        "rave-e2e",
        &TelemetrySettings {
            otlp_endpoint: Some(receiver.endpoint.clone()),
            log_filter: "error".into(),
            ..TelemetrySettings::default()
        },
    )
    .unwrap();
    let cluster = PgCluster::shared();

    let mut dispatcher: task_dispatcher::Settings = defaults();
    dispatcher.server.port = 0;
    dispatcher.database = cluster.create_database().await.unwrap().settings();
    dispatcher.routes = vec![toml::from_str("kind = \"webhook\"").unwrap()];
    dispatcher.agents = vec![agent()];
    dispatcher.relay_tokens_sha256 = vec![hex::encode(token_digest(RELAY_TOKEN))];
    let app = task_dispatcher::Application::build(dispatcher)
        .await
        .unwrap();
    let dispatcher_url = serve(app.port(), app.run_until_stopped()).await;

    let mut reporter: agent_reporter::Settings = defaults();
    reporter.server.port = 0;
    reporter.database = cluster.create_database().await.unwrap().settings();
    reporter.agents = vec![agent()];
    let app = agent_reporter::Application::build(reporter).await.unwrap();
    let reporter_url = serve(app.port(), app.run_until_stopped()).await;

    let mut store: dedup_store::Settings = defaults();
    store.server.port = 0;
    store.database = cluster.create_database().await.unwrap().settings();
    store.relay.dispatcher_url = Some(dispatcher_url.clone());
    store.relay.token = Some(Secret::new(RELAY_TOKEN));
    let app = dedup_store::Application::build(store).await.unwrap();
    let store_url = serve(app.port(), app.run_until_stopped()).await;

    let mut ingest: ingest::Settings = defaults();
    ingest.server.port = 0;
    ingest.store.url = store_url;
    ingest.sources.insert(
        "github".into(),
        toml::from_str(&format!("kind = \"github\"\nsecret = \"{GITHUB_SECRET}\"")).unwrap(),
    );
    let app = ingest::Application::build(ingest).await.unwrap();
    let ingest_url = serve(app.port(), app.run_until_stopped()).await;

    // The reference agent, in this process, waits for the task.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, AGENT_TOKEN).unwrap();
    let agent = tokio::spawn(ravectl::agent::run(ravectl::cli::AgentArgs {
        url: Some(dispatcher_url),
        token_file: Some(token_file),
        reporter_url: Some(reporter_url),
        state_dir: dir.path().to_owned(),
        kinds: Vec::new(),
        command: None,
        simulate_ms: 10,
        wait_secs: 20,
        max_tasks: Some(1),
        exit_when_idle: false,
        otlp_endpoint: None,
    }));

    let trace_id = test_support::trace::random_trace_id();
    let body = br#"{"ref":"refs/heads/main"}"#;
    let receipt: serde_json::Value = reqwest::Client::new()
        .post(format!("{ingest_url}/hooks/github"))
        .header("traceparent", test_support::trace::traceparent(&trace_id))
        .header("x-github-event", "push")
        .header("x-github-delivery", "e2e-delivery")
        .header("x-hub-signature-256", sign::github(GITHUB_SECRET, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task_id = receipt["task_id"].as_str().expect("a task id").to_owned();
    assert_eq!(
        agent.await.unwrap().unwrap(),
        0,
        "the agent completed its task and reported it"
    );

    tokio::task::spawn_blocking(move || telemetry.force_flush())
        .await
        .unwrap();
    let spans = spans(&receiver);
    let of_task: Vec<&Span> = spans
        .iter()
        .filter(|s| s.task_id.as_deref() == Some(task_id.as_str()))
        .collect();
    let names: BTreeSet<&str> = of_task.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "POST /hooks/{source}",
        "POST /v1/events",
        "task.create",
        "task.claim",
        "agent.job",
        "POST /v1/tasks/{task_id}/complete",
        "POST /v1/reports",
    ] {
        assert!(
            names.contains(expected),
            "no span {expected:?} with task_id {task_id}; spans with it: {names:?}"
        );
    }
    let traces: BTreeSet<&str> = of_task.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(
        traces,
        BTreeSet::from([trace_id.as_str()]),
        "one trace, the sender's: {of_task:#?}"
    );
}
