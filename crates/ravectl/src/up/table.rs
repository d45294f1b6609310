//! The table `up` prints once the stack is up: URLs, secrets, logs.

use std::path::Path;

use crate::stack::StackFile;

/// Grafana is not packaged for Debian, so the local stack does not start
/// it; say so, and where its provisioning is.
fn grafana_note(state_dir: &Path) -> String {
    let provisioning = state_dir.join("grafana/provisioning");
    let installed = [
        "/usr/sbin/grafana-server",
        "/usr/sbin/grafana",
        "/usr/share/grafana/bin/grafana",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    match installed {
        Some(path) => format!(
            "Grafana: found {path} but not started by ravectl; start it with GF_PATHS_PROVISIONING={} (this Prometheus and the three dashboards)",
            provisioning.display()
        ),
        None => format!(
            "Grafana: skipped (no Grafana server installed; it is not packaged for Debian). Its provisioning for this stack: {}",
            provisioning.display()
        ),
    }
}

pub(super) fn print_table(stack: &StackFile, state_dir: &Path, created: &[(&'static str, String)]) {
    let rows = [
        (
            "nginx",
            stack.public_url.as_deref().unwrap_or_default(),
            "HTTPS, the only public door: /hooks/, agents' API, /v1/reports",
        ),
        (
            "ingest",
            stack.ingest_url.as_str(),
            "POST /hooks/{github,gitlab,standard}",
        ),
        (
            "dedup-store",
            stack.store_url.as_str(),
            "GET /v1/events (loopback only)",
        ),
        (
            "dispatcher",
            stack.dispatcher_url.as_str(),
            "agents: POST /v1/agents/claim; operators: GET /v1/tasks",
        ),
        (
            "reporter",
            stack.reporter_url.as_deref().unwrap_or_default(),
            "agents: POST /v1/reports",
        ),
        (
            "Pushgateway",
            stack.pushgateway_url.as_deref().unwrap_or_default(),
            "agent_jobs_total & co, one group per agent",
        ),
        (
            "Prometheus",
            stack.prometheus_url.as_deref().unwrap_or_default(),
            "scrapes everything; exemplars on",
        ),
        (
            "PostgreSQL",
            stack.postgres.as_str(),
            "passwords in secrets/*-db.password",
        ),
    ];
    println!();
    println!("{:<12} {:<56} NOTES", "COMPONENT", "URL");
    for (name, url, notes) in rows {
        println!("{name:<12} {url:<56} {notes}");
    }
    let replicas = stack.service_urls("ingest").len();
    if replicas > 1 {
        println!();
        println!(
            "{replicas} replicas of each RAVE service (the URLs above are replica 1's); nginx balances over them:"
        );
        for (service, urls) in &stack.replicas {
            println!("  {service:<16} {}", urls.join("  "));
        }
    }
    println!();
    println!("secrets (mode 0600): {}", stack.secrets_dir.display());
    if !created.is_empty() {
        println!("new development secrets, shown this once:");
        for (label, value) in created {
            println!("  {label:<40} {value}");
        }
    }
    println!("logs: {}", state_dir.join("logs").display());
    println!("{}", grafana_note(state_dir));
    println!();
    let dir = state_dir.display();
    println!("try:  target/release/ravectl send github --state-dir {dir}");
    println!("      target/release/ravectl agent --state-dir {dir}");
    println!("RAVE is up; Ctrl-C stops it.");
}
