//! The reconciler's operator endpoint and settings (its runs against the
//! senders' doubles, with ingest, are in tests/end-to-end).

use dedup_store::reconcile::{Provider, ReconcileSource};
use rave_service::ids::SourceName;
use rave_service::settings::{Secret, ServiceSettings as _};
use serde_json::{Value, json};
use test_support::pg::PgCluster;
use test_support::senders::github::GithubDouble;

use crate::helpers::{error_code, settings_for, spawn_with};

fn github(api_url: &str) -> ReconcileSource {
    ReconcileSource {
        provider: Provider::Github,
        api_url: api_url.to_owned(),
        hook_owner: "octo/hooks".to_owned(),
        hook_id: Some(424242),
        token: Secret::new("api-token"),
        app_id: None,
        request_pause_ms: Some(0),
    }
}

fn name(s: &str) -> SourceName {
    SourceName::parse(s.to_owned()).unwrap()
}

#[tokio::test]
async fn an_operator_lists_over_http_what_a_reconcile_would_redeliver_and_nothing_is_asked() {
    let double = GithubDouble::start(
        "octo/hooks",
        "http://127.0.0.1:9/hooks/github",
        "s",
        "api-token",
    )
    .await;
    double.deliver("push", b"{}").await;
    let db = PgCluster::shared().create_database().await.unwrap();
    let mut settings = settings_for(&db).await;
    settings.reconcile.min_age_secs = 0;
    settings
        .reconcile
        .sources
        .insert(name("github"), github(&double.api_url));
    let store = spawn_with(db, settings).await;
    let url = format!("{}/v1/reconcile/github", store.address);
    let http = reqwest::Client::new();

    let answer = http
        .post(&url)
        .bearer_auth(test_support::STORE_OPERATOR_TOKEN)
        .json(&json!({ "since_secs": 3600 }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let report: Value = answer.json().await.unwrap();
    assert_eq!(report["dry_run"], true, "a dry run unless asked otherwise");
    assert_eq!(report["result"], "ok");
    assert_eq!(report["missing"][0]["action"], "would_redeliver");
    assert_eq!(report["missing"][0]["status_code"], 502);
    assert!(double.redelivery_requests().is_empty());

    let unauthenticated = http
        .post(&url)
        .bearer_auth(test_support::INGEST_TOKEN)
        .json(&json!({ "since_secs": 3600 }))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401, "operators only");

    let unknown = http
        .post(format!("{}/v1/reconcile/billing", store.address))
        .bearer_auth(test_support::STORE_OPERATOR_TOKEN)
        .json(&json!({ "since_secs": 3600 }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "source_not_reconciled");

    for body in [
        json!({ "since_secs": 0 }),
        json!({ "since_secs": 30 * 24 * 3600 }),
        json!({ "since": "6h" }),
    ] {
        let refused = http
            .post(&url)
            .bearer_auth(test_support::STORE_OPERATOR_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{body}");
        assert_eq!(error_code(refused).await, "invalid_request");
    }
}

#[tokio::test]
async fn a_sender_that_refuses_the_token_ends_the_run_failed_with_its_message() {
    let double =
        GithubDouble::start("octo/hooks", "http://127.0.0.1:9/", "s", "another-token").await;
    let db = PgCluster::shared().create_database().await.unwrap();
    let mut settings = settings_for(&db).await;
    settings
        .reconcile
        .sources
        .insert(name("github"), github(&double.api_url));
    let store = spawn_with(db, settings).await;
    let report: Value = reqwest::Client::new()
        .post(format!("{}/v1/reconcile/github", store.address))
        .bearer_auth(test_support::STORE_OPERATOR_TOKEN)
        .json(&json!({ "since_secs": 3600, "dry_run": false }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["result"], "failed");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("Requires authentication"),
        "{error}"
    );
    assert!(
        !error.contains("api-token"),
        "the token is never in an error: {error}"
    );
    let metrics = store.metrics_text().await;
    assert_eq!(
        crate::helpers::sample(
            &metrics,
            r#"dedup_reconcile_runs_total{source="github",result="failed"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn reconcile_settings_that_could_store_an_event_twice_or_leak_a_token_are_refused() {
    let db = PgCluster::shared().create_database().await.unwrap();

    // GitLab lists 7 days of events without their times: a retention
    // shorter than that would take a deleted event for a missed one.
    let mut settings = settings_for(&db).await;
    let mut gitlab = github("https://gitlab.example.com/api/v4");
    gitlab.provider = Provider::Gitlab;
    gitlab.hook_owner = "42".into();
    settings.reconcile.sources.insert(name("gitlab"), gitlab);
    settings.retention.sources.insert(name("gitlab"), 72);
    let error = settings.validate().unwrap_err().to_string();
    assert!(
        error.contains("retention.sources.gitlab") && error.contains("168"),
        "{error}"
    );
    settings.retention.sources.insert(name("gitlab"), 0);
    assert!(settings.validate().is_ok(), "kept forever");

    // The token in clear across a network.
    let mut settings = settings_for(&db).await;
    settings
        .reconcile
        .sources
        .insert(name("github"), github("http://api.github.com"));
    let error = settings.validate().unwrap_err().to_string();
    assert!(
        error.contains("reconcile.sources.github.api_url"),
        "{error}"
    );
    settings
        .reconcile
        .sources
        .insert(name("github"), github("http://127.0.0.1.example.com:80"));
    assert!(
        settings.validate().is_err(),
        "not loopback, whatever it starts with"
    );

    let mut settings = settings_for(&db).await;
    let mut repo = github("https://api.github.com");
    repo.hook_owner = "just-an-owner".into();
    settings.reconcile.sources.insert(name("github"), repo);
    let error = settings.validate().unwrap_err().to_string();
    assert!(error.contains("hook_owner"), "{error}");

    // A GitHub App's webhook is read with the App's own key and id.
    let mut settings = settings_for(&db).await;
    let mut app = github("https://api.github.com");
    app.hook_owner = "app".into();
    app.hook_id = None;
    settings
        .reconcile
        .sources
        .insert(name("github"), app.clone());
    let error = settings.validate().unwrap_err().to_string();
    assert!(error.contains("app_id"), "{error}");
    app.app_id = Some("Iv23li".into());
    settings.reconcile.sources.insert(name("github"), app);
    let error = settings.validate().unwrap_err().to_string();
    assert!(
        error.contains("reconcile.sources.github.token") && error.contains("private key"),
        "{error}"
    );
    assert!(!error.contains("api-token"), "never the secret: {error}");
    let mut settings = settings_for(&db).await;
    let mut repo = github("https://api.github.com");
    repo.hook_id = None;
    settings.reconcile.sources.insert(name("github"), repo);
    assert!(
        settings
            .validate()
            .unwrap_err()
            .to_string()
            .contains("hook_id")
    );

    let mut settings = settings_for(&db).await;
    settings.reconcile.page_size = 101;
    assert!(
        settings
            .validate()
            .unwrap_err()
            .to_string()
            .contains("page_size")
    );
}
