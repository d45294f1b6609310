//! Reconciling with the senders' delivery logs, against doubles of GitHub
//! and GitLab: deliveries sent while ingest was unreachable are found in
//! the sender's log and redelivered, each stored once; nothing already
//! stored is asked for again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dedup_store::reconcile::client::Pauses;
use dedup_store::reconcile::{Action, Provider, ReconcileSource, Report, Run};
use rave_service::ids::SourceName;
use rave_service::settings::Secret;
use test_support::pg::{PgCluster, TestDatabase};
use test_support::senders::github::{GithubDouble, Limit};
use test_support::senders::gitlab::GitlabDouble;
use time::OffsetDateTime;

use crate::helpers::{GITHUB_SECRET, defaults, github_source, serve};

const API_TOKEN: &str = "ghp_double-api-token";
const GITLAB_HOOK_TOKEN: &str = "gitlab-hook-token";

/// Waits recorded instead of slept.
#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<Duration>>);

impl Pauses for Recorded {
    fn pause(
        &self,
        wait: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.0.lock().unwrap().push(wait);
        Box::pin(std::future::ready(()))
    }
}

impl Recorded {
    fn waits(&self) -> Vec<Duration> {
        self.0.lock().unwrap().clone()
    }
}

struct Stack {
    db: TestDatabase,
    ingest_url: String,
    store_url: String,
    reconciler: dedup_store::reconcile::Reconciler,
    pauses: Arc<Recorded>,
}

/// dedup-store reconciling `source` (stepped by the test) and an ingest
/// with a github source and a gitlab source in front of it.
async fn stack(source: &str, reconcile: ReconcileSource) -> Stack {
    stack_with(source, reconcile, 300).await
}

async fn stack_with(source: &str, reconcile: ReconcileSource, min_age_secs: u64) -> Stack {
    let db = PgCluster::shared().create_database().await.unwrap();
    let mut store: dedup_store::Settings = defaults();
    store.server.port = 0;
    store.database = db.settings();
    store.ingest_tokens = vec![Secret::new(test_support::INGEST_TOKEN)];
    store.operator_tokens = vec![Secret::new(test_support::STORE_OPERATOR_TOKEN)];
    store.reconcile.page_size = 4;
    store.reconcile.min_age_secs = min_age_secs;
    store
        .reconcile
        .sources
        .insert(SourceName::parse(source.to_owned()).unwrap(), reconcile);
    let app = dedup_store::Application::build_with(store, false)
        .await
        .unwrap();
    let pauses = Arc::new(Recorded::default());
    let reconciler = app.reconciler().unwrap().pausing_with(pauses.clone());
    let store_url = serve(app.port(), app.run_until_stopped()).await;

    let mut ingest: ingest::Settings = defaults();
    ingest.server.port = 0;
    ingest.store.url = store_url.clone();
    ingest.sources.insert("github".into(), github_source());
    ingest.sources.insert(
        "gitlab".into(),
        toml::from_str(&format!(
            "kind = \"gitlab\"\ntoken = \"{GITLAB_HOOK_TOKEN}\""
        ))
        .unwrap(),
    );
    let app = ingest::Application::build(ingest).await.unwrap();
    let ingest_url = serve(app.port(), app.run_until_stopped()).await;
    Stack {
        db,
        ingest_url,
        store_url,
        reconciler,
        pauses,
    }
}

/// A GitHub double of `octo/hooks` whose deliveries cannot reach ingest
/// (until the test sets its target), and the stack reconciling it as
/// `github`, pausing `pause_ms` between redeliveries (GitHub's second when
/// `None`); its reconcile settings.
async fn github_outage(
    pause_ms: Option<u64>,
    min_age_secs: u64,
) -> (GithubDouble, Stack, ReconcileSource) {
    let double = GithubDouble::start(
        "octo/hooks",
        &unreachable_url("github"),
        GITHUB_SECRET,
        API_TOKEN,
    )
    .await;
    let mut github = source(
        Provider::Github,
        &double.api_url,
        "octo/hooks",
        double.hook_id,
    );
    github.request_pause_ms = pause_ms;
    let stack = stack_with("github", github.clone(), min_age_secs).await;
    (double, stack, github)
}

fn source(provider: Provider, api_url: &str, owner: &str, hook_id: u64) -> ReconcileSource {
    ReconcileSource {
        provider,
        api_url: api_url.to_owned(),
        hook_owner: owner.to_owned(),
        hook_id: Some(hook_id),
        token: Secret::new(API_TOKEN),
        app_id: None,
        request_pause_ms: None,
    }
}

/// A run over the last 6 hours, judged 10 minutes from now (so that every
/// delivery is past `min_age_secs`).
fn run(dry_run: bool) -> Run {
    let now = OffsetDateTime::now_utc() + Duration::from_secs(600);
    Run {
        since: now - Duration::from_secs(6 * 3600),
        now,
        dry_run,
    }
}

fn unreachable_url(source: &str) -> String {
    format!(
        "http://127.0.0.1:{}/hooks/{source}",
        test_support::free_port()
    )
}

fn actions(report: &Report, action: Action) -> usize {
    report.missing.iter().filter(|m| m.action == action).count()
}

async fn stored(db: &TestDatabase, source: &str) -> (i64, i64) {
    let rows = db
        .scalar(&format!(
            "SELECT count(*) FROM events WHERE source = '{source}'"
        ))
        .await;
    let distinct = db
        .scalar(&format!(
            "SELECT count(DISTINCT event_uuid) FROM events WHERE source = '{source}'"
        ))
        .await;
    (rows, distinct)
}

/// Where scripts/install puts GitHub's OpenAPI description.
fn github_openapi() -> std::path::PathBuf {
    test_support::tools::dir()
        .join("npm/@octokit-openapi-23.0.2/package/generated/api.github.com.json")
}

/// Runs tests/github-openapi/validate.py on the double's answers; its
/// summary line.
fn validate_against_github_openapi(double: &GithubDouble) -> String {
    let (ok, out) = github_openapi_check(&serde_json::to_value(double.transcript()).unwrap());
    assert!(
        ok,
        "the GitHub double answered outside GitHub's OpenAPI description:\n{out}"
    );
    out.lines().next().unwrap_or_default().to_owned()
}

/// Whether `exchanges` validate, and what the check printed.
fn github_openapi_check(exchanges: &serde_json::Value) -> (bool, String) {
    let spec = github_openapi();
    assert!(
        spec.exists(),
        "{} is missing: scripts/install fetches @octokit/openapi",
        spec.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("transcript.json");
    std::fs::write(&transcript, exchanges.to_string()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The tools' venv has jsonschema; scripts/test puts it first on PATH.
    let venv_python =
        Some(test_support::tools::dir().join("venv/bin/python3")).filter(|p| p.exists());
    let python = venv_python.unwrap_or_else(|| "python3".into());
    let out = std::process::Command::new(python)
        .arg(root.join("tests/github-openapi/validate.py"))
        .arg("--spec")
        .arg(&spec)
        .arg(&transcript)
        .output()
        .expect("python3 (scripts/install makes its venv)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_openapi_check_refuses_answers_github_would_not_give() {
    let path = "/repos/octo/hooks/hooks/424242/deliveries";
    let item = serde_json::json!({
        "id": 1, "guid": "58474f00-b361-11eb-836d-0e4f3503ccbe", "delivered_at": "2021-05-12T20:33:44Z",
        "redelivery": false, "duration": 0.03, "status": "OK", "status_code": 200,
        "event": "issues", "action": null, "installation_id": null, "repository_id": 1
    });
    let exchange =
        |query: &str, status: u16, headers: serde_json::Value, body: serde_json::Value| {
            serde_json::json!({
                "method": "GET", "path": path, "query": query, "status": status,
                "headers": headers, "body": body,
            })
        };
    let json_type = serde_json::json!([["content-type", "application/json; charset=utf-8"]]);
    let (ok, out) = github_openapi_check(&serde_json::json!([exchange(
        "per_page=2",
        200,
        json_type.clone(),
        serde_json::json!([item])
    )]));
    assert!(ok, "a faithful answer passes: {out}");

    let mut missing_guid = item.clone();
    missing_guid.as_object_mut().unwrap().remove("guid");
    let mut code_as_text = item.clone();
    code_as_text["status_code"] = serde_json::json!("200");
    for (case, bad) in [
        (
            "a required field missing",
            exchange(
                "",
                200,
                json_type.clone(),
                serde_json::json!([missing_guid]),
            ),
        ),
        (
            "a field of the wrong type",
            exchange(
                "",
                200,
                json_type.clone(),
                serde_json::json!([code_as_text]),
            ),
        ),
        (
            "a status the operation does not document",
            exchange(
                "",
                500,
                json_type.clone(),
                serde_json::json!({"message": "x"}),
            ),
        ),
        (
            "a query parameter of the wrong type",
            exchange(
                "per_page=many",
                200,
                json_type.clone(),
                serde_json::json!([]),
            ),
        ),
        (
            "an unknown query parameter",
            exchange("page=2", 200, json_type.clone(), serde_json::json!([])),
        ),
        (
            "a Link to another operation",
            exchange(
                "",
                200,
                serde_json::json!([
                    ["content-type", "application/json"],
                    ["link", "<http://x/repos/o/r/hooks/1>; rel=\"next\""]
                ]),
                serde_json::json!([]),
            ),
        ),
        (
            "a rate-limit header that is not a number",
            exchange(
                "",
                200,
                serde_json::json!([
                    ["content-type", "application/json"],
                    ["x-ratelimit-remaining", "lots"]
                ]),
                serde_json::json!([]),
            ),
        ),
    ] {
        let (ok, out) = github_openapi_check(&serde_json::json!([bad]));
        assert!(!ok, "{case} must be refused: {out}");
        assert!(out.contains("INVALID"), "{case}: {out}");
    }
}

#[tokio::test]
async fn deliveries_missed_while_ingest_was_unreachable_are_redelivered_and_stored_once() {
    let target = |url: &str| format!("{url}/hooks/github");
    let (double, stack, _) = github_outage(None, 300).await;
    double.set_target(&target(&stack.ingest_url));
    let body = |n: usize| format!(r#"{{"action":"opened","number":{n}}}"#).into_bytes();

    // Delivered and stored; then stored but logged as failed (the answer
    // was lost); then refused at the door.
    for n in 0..5 {
        double.deliver("issues", &body(n)).await;
    }
    double.lose_answers(true);
    for n in 5..7 {
        double.deliver("issues", &body(n)).await;
    }
    double.lose_answers(false);
    double.set_target(&unreachable_url("github"));
    let mut missed = Vec::new();
    for n in 7..13 {
        missed.push(double.deliver("issues", &body(n)).await);
    }
    double.set_target(&target(&stack.ingest_url));
    assert_eq!(stored(&stack.db, "github").await, (7, 7));

    let dry = stack
        .reconciler
        .reconcile("github", run(true))
        .await
        .unwrap();
    assert_eq!(dry.result, "ok", "{:?}", dry.error);
    assert_eq!(
        (
            dry.listed,
            dry.events,
            dry.stored,
            actions(&dry, Action::WouldRedeliver)
        ),
        (13, 13, 7, 6)
    );
    assert!(
        double.redelivery_requests().is_empty(),
        "a dry run asks nothing"
    );

    // A secondary rate limit on the first page and a spent quota on a
    // later call: both are waited out.
    double.limit_next_requests(&[
        Limit::Secondary {
            retry_after_secs: 3,
        },
        Limit::Primary { reset_in_secs: 0 },
    ]);
    let report = stack
        .reconciler
        .reconcile("github", run(false))
        .await
        .unwrap();
    assert_eq!(report.result, "ok", "{:?}", report.error);
    assert_eq!((report.redelivered, report.failed), (6, 0));
    assert_eq!(report.pages, 4, "13 deliveries, 4 a page");
    assert_eq!(report.rate_limit_waits, 2);
    let waits = stack.pauses.waits();
    assert_eq!(waits[0], Duration::from_secs(3), "Retry-After is honoured");
    assert_eq!(
        waits
            .iter()
            .filter(|w| **w == Duration::from_secs(1))
            .count(),
        5,
        "a second between two redeliveries: {waits:?}"
    );
    let mut redelivered: Vec<String> = report
        .missing
        .iter()
        .map(|m| m.event_uuid.clone())
        .collect();
    redelivered.sort();
    missed.sort();
    assert_eq!(
        redelivered, missed,
        "exactly the deliveries that never arrived"
    );
    assert_eq!(stored(&stack.db, "github").await, (13, 13));
    assert_eq!(report.unrecovered, 0);

    // Nothing more to do: the next run lists the redeliveries too and asks
    // for nothing.
    let again = stack
        .reconciler
        .reconcile("github", run(false))
        .await
        .unwrap();
    assert_eq!((again.listed, again.events, again.stored), (19, 13, 13));
    assert!(again.missing.is_empty());
    assert_eq!(double.redelivery_requests().len(), 6);

    let metrics = test_support::metrics::scrape(&reqwest::Client::new(), &stack.store_url).await;
    let sample = |series: &str| test_support::metrics::sample(&metrics, series);
    assert_eq!(
        sample(r#"dedup_reconcile_redelivered_total{source="github"}"#),
        6.0
    );
    assert_eq!(
        sample(r#"dedup_reconcile_unrecovered{source="github"}"#),
        0.0
    );
    assert_eq!(
        sample("dedup_events_duplicate_total"),
        0.0,
        "nothing stored was sent again"
    );

    let validated = validate_against_github_openapi(&double);
    eprintln!(
        "reconcile (GitHub double): 13 deliveries, 6 missed while ingest was unreachable, 2 stored with their answers lost; \
         dry run listed 6; the run redelivered 6 after 2 rate-limit waits; stored 13 events, 13 distinct, 0 duplicates; a second run asked 0\n{validated}"
    );
}

#[tokio::test]
async fn a_redelivery_that_fails_again_is_not_asked_twice_and_stays_unrecovered() {
    let (double, stack, _) = github_outage(None, 300).await;
    double
        .deliver("push", br#"{"ref":"refs/heads/main"}"#)
        .await;

    let first = stack
        .reconciler
        .reconcile("github", run(false))
        .await
        .unwrap();
    assert_eq!((first.redelivered, first.unrecovered), (1, 1));
    let second = stack
        .reconciler
        .reconcile("github", run(false))
        .await
        .unwrap();
    assert_eq!(actions(&second, Action::AlreadyRequested), 1);
    assert_eq!(double.redelivery_requests().len(), 1, "asked once, ever");
    assert_eq!(second.unrecovered, 1);

    let metrics = test_support::metrics::scrape(&reqwest::Client::new(), &stack.store_url).await;
    assert_eq!(
        test_support::metrics::sample(&metrics, r#"dedup_reconcile_unrecovered{source="github"}"#),
        1.0,
        "what the alert RaveDeliveriesNotRecovered watches"
    );
    validate_against_github_openapi(&double);
}

#[tokio::test]
async fn a_run_of_a_source_another_replica_is_reconciling_does_nothing() {
    let (double, stack, _) = github_outage(None, 300).await;
    double.deliver("push", b"{}").await;
    // The other replica's run: the same session lock, held elsewhere.
    let other = stack.db.connect().await.unwrap();
    other
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('rave-reconcile:' || 'github', 0))",
            &[],
        )
        .await
        .unwrap();
    let report = stack
        .reconciler
        .reconcile("github", run(false))
        .await
        .unwrap();
    assert_eq!((report.result, report.busy), ("busy", true));
    assert!(double.transcript().is_empty(), "not even listed");
    other
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('rave-reconcile:' || 'github', 0))",
            &[],
        )
        .await
        .unwrap();
    let report = stack
        .reconciler
        .reconcile("github", run(false))
        .await
        .unwrap();
    assert_eq!((report.result, report.redelivered), ("ok", 1));
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_longest_wait_ends_the_run_without_asking() {
    let (double, stack, _) = github_outage(None, 300).await;
    double.deliver("push", b"{}").await;
    double.limit_next_requests(&[Limit::Secondary {
        retry_after_secs: 7200,
    }]);
    let report = stack
        .reconciler
        .reconcile("github", run(false))
        .await
        .unwrap();
    assert_eq!(report.result, "rate_limited", "{:?}", report.error);
    assert!(stack.pauses.waits().is_empty(), "did not wait two hours");
    assert!(double.redelivery_requests().is_empty());
    let report = stack
        .reconciler
        .reconcile("github", run(false))
        .await
        .unwrap();
    assert_eq!(
        (report.result, report.redelivered),
        ("ok", 1),
        "the next run carries on"
    );
    validate_against_github_openapi(&double);
}

#[tokio::test]
async fn deliveries_gitlab_failed_to_send_are_resent_at_its_pace_and_stored_once() {
    let double =
        GitlabDouble::start("42", "http://127.0.0.1:9/", GITLAB_HOOK_TOKEN, API_TOKEN).await;
    let stack = stack(
        "gitlab",
        source(Provider::Gitlab, &double.api_url, "42", double.hook_id),
    )
    .await;
    let target = format!("{}/hooks/gitlab", stack.ingest_url);
    double.set_target(&target);
    for n in 0..3 {
        double
            .deliver(
                "Push Hook",
                format!(r#"{{"object_kind":"push","n":{n}}}"#).as_bytes(),
            )
            .await;
    }
    double.set_target(&unreachable_url("gitlab"));
    for n in 3..10 {
        double
            .deliver(
                "Issue Hook",
                format!(r#"{{"object_kind":"issue","n":{n}}}"#).as_bytes(),
            )
            .await;
    }
    double.set_target(&target);
    assert_eq!(stored(&stack.db, "gitlab").await, (3, 3));

    let report = stack
        .reconciler
        .reconcile("gitlab", run(false))
        .await
        .unwrap();
    assert_eq!(report.result, "ok", "{:?}", report.error);
    assert_eq!(
        (report.listed, report.stored, report.redelivered),
        (10, 3, 7)
    );
    assert_eq!(report.pages, 3, "10 events, 4 a page, X-Next-Page followed");
    assert_eq!(stored(&stack.db, "gitlab").await, (10, 10));
    let waits = stack.pauses.waits();
    assert_eq!(
        waits
            .iter()
            .filter(|w| **w == Duration::from_secs(12))
            .count(),
        6,
        "GitLab's 5 resends a minute: 12 s apart; {waits:?}"
    );
    assert!(
        waits.contains(&Duration::from_secs(60)),
        "its 429's Retry-After is honoured: {waits:?}"
    );
    let again = stack
        .reconciler
        .reconcile("gitlab", run(false))
        .await
        .unwrap();
    assert!(again.missing.is_empty(), "{:?}", again.missing);
    let resends = double
        .transcript()
        .iter()
        .filter(|e| e.method == "POST" && e.status == 201)
        .count();
    assert_eq!(resends, 7, "each missing event resent once");
    eprintln!(
        "reconcile (GitLab double): 10 deliveries, 7 failed while ingest was unreachable; resent 7 (12 s apart, one 429 waited out); stored 10 events, 10 distinct"
    );
}

#[tokio::test]
async fn ravectl_reconcile_lists_by_default_and_redelivers_with_apply() {
    // ravectl's runs are judged from now: nothing is too young here.
    let (double, stack, _) = github_outage(Some(0), 0).await;
    let guid = double
        .deliver("push", br#"{"ref":"refs/heads/main"}"#)
        .await;
    double.set_target(&format!("{}/hooks/github", stack.ingest_url));

    // What `ravectl up` writes, as far as this command reads it.
    let state = tempfile::tempdir().unwrap();
    let secrets = state.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(
        secrets.join("operator.token"),
        test_support::STORE_OPERATOR_TOKEN,
    )
    .unwrap();
    std::fs::write(
        state.path().join("stack.json"),
        serde_json::json!({
            "ingest_url": stack.ingest_url,
            "store_url": stack.store_url,
            "dispatcher_url": "http://127.0.0.1:9",
            "postgres": "unused",
            "secrets_dir": secrets,
        })
        .to_string(),
    )
    .unwrap();
    let reconcile = |apply: bool| {
        ravectl::cli::Command::Reconcile(ravectl::cli::ReconcileArgs {
            source: "github".into(),
            since: ravectl::cli::parse_span("6h").unwrap(),
            apply,
            json: false,
            state_dir: state.path().to_owned(),
        })
    };
    assert_eq!(ravectl::run(reconcile(false)).await.unwrap(), 0);
    assert!(
        double.redelivery_requests().is_empty(),
        "a dry run by default"
    );
    assert_eq!(stored(&stack.db, "github").await, (0, 0));
    assert_eq!(ravectl::run(reconcile(true)).await.unwrap(), 0);
    assert_eq!(double.redelivery_requests().len(), 1);
    assert_eq!(stored(&stack.db, "github").await, (1, 1));
    let uuid = stack
        .db
        .scalar(&format!(
            "SELECT count(*) FROM events WHERE event_uuid = '{guid}'"
        ))
        .await;
    assert_eq!(uuid, 1);
}

#[test]
fn ravectl_prints_each_missing_delivery_and_what_was_done() {
    let report = serde_json::json!({
        "source": "github", "provider": "github", "dry_run": true, "result": "ok",
        "listed": 3, "pages": 1, "events": 3, "stored": 2, "too_young": 0,
        "redelivered": 0, "failed": 0, "unrecovered": 0, "truncated": false,
        "missing": [{
            "event_uuid": "58474f00-b361-11eb-836d-0e4f3503ccbe", "delivery_id": "12077215967",
            "event_type": "issues", "status_code": 502, "action": "would_redeliver"
        }]
    });
    let table = ravectl::reconcile::table(&report);
    assert!(
        table.contains("58474f00-b361-11eb-836d-0e4f3503ccbe") && table.contains("would redeliver"),
        "{table}"
    );
    assert!(
        table.contains("3 deliveries listed") && table.contains("1 missing"),
        "{table}"
    );
    assert!(table.contains("run again with --apply"), "{table}");
}

/// A fresh RSA key as GitHub hands out an App's (PKCS#1 PEM).
fn app_private_key() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .expect("openssl (a Debian package scripts/install installs)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_github_apps_own_webhook_is_reconciled_as_the_app_with_its_signed_tokens() {
    let key = app_private_key();
    let double = GithubDouble::start_app(
        "Iv23liAPPCLIENT",
        &key,
        "http://127.0.0.1:9/",
        GITHUB_SECRET,
    )
    .await;
    let app = ReconcileSource {
        provider: Provider::Github,
        api_url: double.api_url.clone(),
        hook_owner: "app".into(),
        hook_id: None,
        token: Secret::new(key.clone()),
        app_id: Some("Iv23liAPPCLIENT".into()),
        request_pause_ms: None,
    };
    let stack = stack("github", app.clone()).await;
    double.set_target(&format!("{}/hooks/github", stack.ingest_url));
    double
        .deliver("installation", br#"{"action":"created"}"#)
        .await;
    double.set_target(&unreachable_url("github"));
    let missed = double.deliver("issues", br#"{"action":"opened"}"#).await;
    double.set_target(&format!("{}/hooks/github", stack.ingest_url));

    let report = stack
        .reconciler
        .reconcile("github", run(false))
        .await
        .unwrap();
    assert_eq!(report.result, "ok", "{:?}", report.error);
    assert_eq!((report.stored, report.redelivered), (1, 1));
    assert_eq!(report.missing[0].event_uuid, missed);
    assert_eq!(stored(&stack.db, "github").await, (2, 2));
    let validated = validate_against_github_openapi(&double);
    assert!(
        validated.contains("apps/list-webhook-deliveries"),
        "{validated}"
    );
    assert!(
        validated.contains("apps/redeliver-webhook-delivery"),
        "{validated}"
    );

    // Another App's key is refused, as GitHub refuses it.
    let mut impostor = app;
    impostor.token = Secret::new(app_private_key());
    let other = stack_with("github", impostor, 300).await;
    let refused = other
        .reconciler
        .reconcile("github", run(true))
        .await
        .unwrap();
    assert_eq!(refused.result, "failed");
    assert!(refused.error.unwrap().contains("401"));
}

#[tokio::test]
async fn two_replicas_reconciling_at_once_ask_for_each_missing_delivery_once() {
    let (double, stack, github) = github_outage(Some(0), 300).await;
    // A second dedup-store replica over the same database.
    let mut replica: dedup_store::Settings = defaults();
    replica.server.port = 0;
    replica.database = stack.db.settings();
    replica.ingest_tokens = vec![Secret::new(test_support::INGEST_TOKEN)];
    replica.reconcile.page_size = 4;
    replica
        .reconcile
        .sources
        .insert(SourceName::parse("github".to_owned()).unwrap(), github);
    let replica = dedup_store::Application::build_with(replica, false)
        .await
        .unwrap();
    let other = replica
        .reconciler()
        .unwrap()
        .pausing_with(Arc::new(Recorded::default()));
    serve(replica.port(), replica.run_until_stopped()).await;

    double.set_target(&unreachable_url("github"));
    for n in 0..10 {
        double
            .deliver("push", format!(r#"{{"n":{n}}}"#).as_bytes())
            .await;
    }
    double.set_target(&format!("{}/hooks/github", stack.ingest_url));
    let (a, b) = tokio::join!(
        stack.reconciler.reconcile("github", run(false)),
        other.reconcile("github", run(false))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.redelivered + b.redelivered, 10, "{a:?}\n{b:?}");
    let mut asked = double.redelivery_requests();
    asked.sort_unstable();
    asked.dedup();
    assert_eq!(asked.len(), 10, "each delivery asked for once");
    assert_eq!(double.redelivery_requests().len(), 10);
    assert_eq!(stored(&stack.db, "github").await, (10, 10));
}
