//! One webhook's whole life in one process, exported to an OTLP receiver:
//! every span of it shares one trace id, RAVE's own, and carries the task's
//! `task_id`; the sender's trace context is only linked.

use std::collections::BTreeSet;

use rave_service::settings::Secret;
use test_support::pg::PgCluster;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_whole_life_is_one_trace_of_raves_own_whose_spans_carry_its_task_id() {
    let _exclusive = exclusive().await;
    let (receiver, telemetry) = telemetry();
    let cluster = PgCluster::shared();

    let dispatcher_url = webhook_dispatcher(cluster).await;

    let mut reporter: agent_reporter::Settings = defaults();
    reporter.server.port = 0;
    reporter.database = cluster.create_database().await.unwrap().settings();
    reporter.agents = vec![agent()];
    let app = agent_reporter::Application::build(reporter).await.unwrap();
    let reporter_url = serve(app.port(), app.run_until_stopped()).await;

    let mut store: dedup_store::Settings = defaults();

    store.ingest_tokens = vec![rave_service::settings::Secret::new(
        test_support::INGEST_TOKEN,
    )];
    store.server.port = 0;
    store.database = cluster.create_database().await.unwrap().settings();
    store.relay.dispatcher_url = Some(dispatcher_url.clone());
    store.relay.token = Some(Secret::new(RELAY_TOKEN));
    let app = dedup_store::Application::build(store).await.unwrap();
    let store_url = serve(app.port(), app.run_until_stopped()).await;

    let mut ingest: ingest::Settings = defaults();
    ingest.server.port = 0;
    ingest.store.url = store_url.clone();
    ingest.sources.insert("github".into(), github_source());
    let app = ingest::Application::build(ingest).await.unwrap();
    let ingest_url = serve(app.port(), app.run_until_stopped()).await;

    // The reference agent, in this process, waits for the task.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, AGENT_TOKEN).unwrap();
    let agent = tokio::spawn(ravectl::agent::run(ravectl::cli::AgentArgs {
        url: Some(dispatcher_url.clone()),
        token_file: Some(token_file),
        reporter_url: Some(reporter_url.clone()),
        state_dir: dir.path().to_owned(),
        kinds: Vec::new(),
        command: None,
        simulate_ms: 10,
        wait_secs: 20,
        parallel: 1,
        max_tasks: Some(1),
        exit_when_idle: false,
        otlp_endpoint: None,
        report_buffer_dir: None,
        report_buffer_bytes: 16 << 20,
    }));

    // Every service's exposition passes promtool's lint (HELP, names, types).
    for url in [&dispatcher_url, &reporter_url, &store_url, &ingest_url] {
        let text = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs");
        std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{url}/metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The sender claims a trace of its own and says "do not sample".
    let senders = test_support::trace::random_trace_id();
    let receipt = json_of(github_webhook(
        &ingest_url,
        "e2e-delivery",
        Some(&test_support::trace::unsampled_traceparent(&senders)),
    ))
    .await;
    let task_id = receipt["task_id"].as_str().expect("a task id").to_owned();
    let trace_id = receipt["trace_id"].as_str().expect("a trace id").to_owned();
    assert_ne!(trace_id, senders, "the sender chose no stored trace id");
    assert_eq!(
        agent.await.unwrap().unwrap(),
        0,
        "the agent completed its task and reported it"
    );

    const EXPECTED: [&str; 7] = [
        "POST /hooks/{source}",
        // dedup-store stores each event of ingest's batch call in a span of
        // its webhook's trace.
        "event.store",
        "task.create",
        "task.claim",
        "agent.job",
        // The reference agent ends its batch in one /v1/agents/results
        // call; the dispatcher's span for each item joins its task's trace.
        "task.complete",
        "POST /v1/reports",
    ];
    // On a busy machine the last batch can still be on its way.
    let spans = flushed_spans(receiver, telemetry, |spans| {
        let seen: BTreeSet<&str> = spans
            .iter()
            .filter(|s| s.task_id.as_deref() == Some(task_id.as_str()))
            .map(|s| s.name.as_str())
            .collect();
        EXPECTED.iter().all(|e| seen.contains(e))
    })
    .await;
    let of_task: Vec<&Span> = spans
        .iter()
        .filter(|s| s.task_id.as_deref() == Some(task_id.as_str()))
        .collect();
    let names: BTreeSet<&str> = of_task.iter().map(|s| s.name.as_str()).collect();
    for expected in EXPECTED {
        assert!(
            names.contains(expected),
            "no span {expected:?} with task_id {task_id}; spans with it: {names:?}"
        );
    }
    let traces: BTreeSet<&str> = of_task.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(
        traces,
        BTreeSet::from([trace_id.as_str()]),
        "one trace, the one the receipt names, sampled although the sender said not to: {of_task:#?}"
    );
    let hook = of_task
        .iter()
        .find(|s| s.name == "POST /hooks/{source}")
        .unwrap();
    assert_eq!(
        hook.links,
        std::slice::from_ref(&senders),
        "ingest's span links to the sender's trace"
    );
    assert!(
        spans.iter().all(|s| s.trace_id != senders),
        "no span joined the sender's trace"
    );
}
