//! `ravectl up --replicas 2`: two of each RAVE service over one PostgreSQL,
//! behind nginx, each scraped by Prometheus.

use ravectl::stack::StackFile;

use super::{ravectl, replica_ports, up_with};

#[tokio::test]
async fn a_stack_with_two_replicas_of_each_service_passes_verify_and_shows_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_path_buf();
    let _stack = up_with(&state, replica_ports(), &["--replicas", "2"]);
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

    let verify = ravectl()
        .arg("verify")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(
        report.lines().filter(|l| l.starts_with("PASS")).count(),
        12,
        "{report}"
    );
    assert!(
        report.contains("up == 1 for all 13 targets"),
        "Prometheus scrapes both replicas of each service: {report}"
    );

    // verify's webhooks went through nginx, which used both ingest replicas.
    for url in stack.service_urls("ingest") {
        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let requests: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("webhook_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(requests > 0.0, "{url} served no webhook");
    }
}
