//! Sources and secrets reloaded while ingest runs: a secret rotation needs
//! no restart, and a bad new configuration changes nothing.

use ingest::settings::SourceSettings;
use rave_service::settings::Secret;
use test_support::pg::PgCluster;
use test_support::sign;

use crate::helpers::{GITHUB_SECRET, ingest_settings, sample, send, spawn_store};

const NEW_SECRET: &str = "github-rotated-secret";

struct Running {
    url: String,
    reloader: ingest::reload::Reloader,
    settings: ingest::Settings,
    http: reqwest::Client,
}

async fn running() -> Running {
    rave_service::telemetry::init_for_tests();
    let db = PgCluster::shared().create_database().await.unwrap();
    let store = spawn_store(&db).await;
    // The database lives as long as the test process: the store keeps it.
    std::mem::forget(db);
    let settings = ingest_settings(&store, &sign::new_whsec(), &sign::new_whsec());
    let app = ingest::Application::build(settings.clone()).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let reloader = app.reloader();
    tokio::spawn(app.run_until_stopped());
    Running {
        url,
        reloader,
        settings,
        http: reqwest::Client::new(),
    }
}

impl Running {
    async fn github(&self, source: &str, secret: &str, delivery: &str) -> u16 {
        let body = format!(r#"{{"delivery":"{delivery}"}}"#);
        let request = self
            .http
            .post(format!("{}/hooks/{source}", self.url))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign::github(secret, body.as_bytes()))
            .body(body);
        send(request).await.0
    }

    fn with_github_secrets(&self, secrets: &[&str]) -> ingest::Settings {
        let mut settings = self.settings.clone();
        let source: &mut SourceSettings = settings.sources.get_mut("github").unwrap();
        source.secrets = secrets.iter().map(|s| Secret::new(*s)).collect();
        settings
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = test_support::metrics::scrape(&self.http, &self.url).await;
        sample(&text, series)
    }
}

#[tokio::test]
async fn a_secret_is_rotated_by_two_reloads_without_a_delivery_refused_for_either_secret_in_between()
 {
    let app = running().await;
    assert_eq!(app.github("github", GITHUB_SECRET, "rot-1").await, 202);
    assert_eq!(app.github("github", NEW_SECRET, "rot-2").await, 401);

    // The new secret first: both verify while senders switch.
    app.reloader
        .apply(&app.with_github_secrets(&[GITHUB_SECRET, NEW_SECRET]))
        .unwrap();
    assert_eq!(app.github("github", GITHUB_SECRET, "rot-3").await, 202);
    assert_eq!(app.github("github", NEW_SECRET, "rot-4").await, 202);

    // Then the old one removed.
    app.reloader
        .apply(&app.with_github_secrets(&[NEW_SECRET]))
        .unwrap();
    assert_eq!(app.github("github", NEW_SECRET, "rot-5").await, 202);
    assert_eq!(app.github("github", GITHUB_SECRET, "rot-6").await, 401);
}

#[tokio::test]
async fn a_reload_that_does_not_validate_is_refused_whole_and_the_running_sources_stay() {
    let app = running().await;
    // A new source next to a github source left without a secret.
    let mut bad = app.with_github_secrets(&[]);
    bad.sources
        .insert("added".into(), app.settings.sources["github"].clone());
    let reason = format!("{:#}", app.reloader.apply(&bad).unwrap_err());
    assert!(reason.contains("sources.github.secrets"), "{reason}");
    // Nothing of it applied: the old secret verifies, the new source is unknown.
    assert_eq!(app.github("github", GITHUB_SECRET, "bad-1").await, 202);
    assert_eq!(app.github("added", GITHUB_SECRET, "bad-2").await, 404);
}

#[tokio::test]
async fn a_source_added_by_a_reload_takes_deliveries_and_is_counted_under_its_own_label() {
    let app = running().await;
    let mut settings = app.settings.clone();
    let mut added = app.settings.sources["github"].clone();
    added.secrets = vec![Secret::new(NEW_SECRET)];
    settings.sources.insert("forge".into(), added);
    let summary = app.reloader.apply(&settings).unwrap();
    assert!(summary.contains("added: forge"), "{summary}");
    assert_eq!(app.github("forge", NEW_SECRET, "forge-1").await, 202);
    let accepted = app
        .metric(r#"webhook_requests_total{source="forge",outcome="accepted"}"#)
        .await;
    assert_eq!(accepted, 1.0);
}

#[tokio::test]
async fn reloads_are_counted_by_result_and_a_refused_one_clears_the_success_gauge() {
    let app = running().await;
    assert_eq!(app.metric("rave_config_last_reload_successful").await, 1.0);
    // As the SIGHUP handler does: apply, then record the outcome.
    let outcome = app
        .reloader
        .apply(&app.with_github_secrets(&[]))
        .map_err(|e| e.to_string());
    app.reloader.metrics().record(&outcome);
    assert_eq!(app.metric("rave_config_last_reload_successful").await, 0.0);
    assert_eq!(
        app.metric(r#"rave_config_reloads_total{result="refused"}"#)
            .await,
        1.0
    );
    let outcome = app.reloader.apply(&app.settings).map_err(|e| e.to_string());
    app.reloader.metrics().record(&outcome);
    assert_eq!(app.metric("rave_config_last_reload_successful").await, 1.0);
    assert_eq!(
        app.metric(r#"rave_config_reloads_total{result="applied"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_delivery_in_flight_during_a_reload_is_verified_under_the_sources_it_started_with() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = running().await;
    let body = br#"{"in":"flight","padding":"................................"}"#;
    let signature = sign::github(GITHUB_SECRET, body);
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-github-event: push\r\nx-github-delivery: in-flight-1\r\n\
         x-hub-signature-256: {signature}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let address = app.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    // The headers and half the body: the request has started.
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..20]).await.unwrap();
    stream.flush().await.unwrap();
    // Wait until ingest holds the request (it counts bytes in flight).
    crate::helpers::eventually_in_flight(&app.http, &app.url).await;
    // Meanwhile the secret it is signed with is rotated out.
    app.reloader
        .apply(&app.with_github_secrets(&[NEW_SECRET]))
        .unwrap();
    stream.write_all(&body[20..]).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    // A delivery that starts now meets the new sources.
    assert_eq!(
        app.github("github", GITHUB_SECRET, "in-flight-2").await,
        401
    );
}
