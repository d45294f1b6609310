//! `ravectl up --replicas 2`: two of each RAVE service over one PostgreSQL,
//! behind nginx, each scraped by Prometheus, measured by `ravectl bench`.

use ravectl::stack::StackFile;

use super::bench::bench_smoke;
use super::{ravectl, replica_ports, up_with, verify_passes, webhook_requests};

#[tokio::test]
async fn a_stack_with_two_replicas_of_each_service_passes_verify_shows_and_measures_every_replica()
{
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // The bench loads it from one address: lift nginx's per-address limits.
    let _stack = up_with(
        &state,
        replica_ports(),
        &[
            "--replicas",
            "2",
            "--hooks-rate-limit",
            "0",
            "--agents-rate-limit",
            "0",
        ],
    );
    let stack = StackFile::read(&state).unwrap();
    for service in ["ingest", "dedup-store", "task-dispatcher", "agent-reporter"] {
        assert_eq!(stack.service_urls(service).len(), 2, "{service}");
    }

    let status = ravectl()
        .arg("status")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    for service in ["ingest", "dedup-store", "task-dispatcher", "agent-reporter"] {
        for k in [1, 2] {
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("{service}@{k} ")))
                .unwrap_or_else(|| panic!("no row for {service}@{k} in\n{table}"));
            assert!(row.contains(" up "), "{row}");
        }
    }

    let report = verify_passes(&state);
    assert!(
        report.contains("up == 1 for all 13 targets"),
        "Prometheus scrapes both replicas of each service: {report}"
    );

    // verify's webhooks went through nginx, which used both ingest replicas.
    let http = reqwest::Client::new();
    for url in stack.service_urls("ingest") {
        assert!(
            webhook_requests(&http, &url).await > 0.0,
            "{url} served no webhook"
        );
    }

    // `ravectl bench intake` on the replicas: each one's CPU and memory, and
    // where the bottleneck is.
    let (day, report) = bench_smoke(&state, "intake", &dir.path().join("results"), &[]);
    assert_eq!(report["replicas"], 2);
    let saturation = &report["intake"][0];
    assert!(saturation["ok"].as_u64().unwrap() > 0, "{saturation}");
    for replica in ["ingest@1", "ingest@2", "dedup-store@1", "dedup-store@2"] {
        assert!(
            saturation["usage"][replica]["cpu_cores"].as_f64().unwrap() > 0.0,
            "{replica} did no work: {saturation}"
        );
        assert!(report["idle_rss_mb"][replica].as_f64().unwrap() > 0.0);
    }
    let summary = std::fs::read_to_string(day.join("summary.md")).unwrap();
    assert!(
        summary.contains("2 replicas of each RAVE service"),
        "{summary}"
    );
    assert!(summary.contains("Bottleneck: "), "{summary}");
}
