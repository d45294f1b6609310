//! The Prometheus configuration and rules: promtool's checks and unit tests,
//! and the alert conventions (monitoring-mixins' mixtool lint, by hand).

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("prometheus"))
        .output()
        .expect("promtool runs (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_prometheus_config_and_rules_pass_promtool_and_every_alert_has_a_firing_and_a_quiet_test() {
    promtool(&[
        "check",
        "config",
        "--lint=all",
        "--lint-fatal",
        "prometheus.yml",
    ]);
    promtool(&[
        "check",
        "rules",
        "--lint=duplicate-rules",
        "--lint-fatal",
        "rules/rave-alerts.yml",
        "rules/rave-recording.yml",
    ]);
    promtool(&["test", "rules", "tests/rave-alerts.test.yml"]);

    let tests =
        std::fs::read_to_string(repo().join("prometheus/tests/rave-alerts.test.yml")).unwrap();
    let tests = &YamlLoader::load_from_str(&tests).unwrap()[0];
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        let cases: Vec<usize> = tests["tests"]
            .as_vec()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_vec().cloned().unwrap_or_default())
            .filter(|c| c["alertname"].as_str() == Some(name))
            .map(|c| c["exp_alerts"].as_vec().map_or(0, Vec::len))
            .collect();
        assert!(
            cases.iter().any(|&n| n > 0),
            "{name}: no test where it fires"
        );
        assert!(cases.contains(&0), "{name}: no test where it must not fire");
    }
}

fn alerts() -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo().join("prometheus/rules/rave-alerts.yml")).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    doc["groups"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_vec().cloned().unwrap_or_default())
        .filter(|r| !r["alert"].is_badvalue())
        .collect()
}

/// What an alert's `service` label may name.
const SERVICES: [&str; 8] = [
    "ingest",
    "dedup-store",
    "task-dispatcher",
    "agent-reporter",
    "postgres",
    "nginx",
    "node",
    "observability",
];

#[test]
fn alerts_follow_the_conventions_and_each_has_a_runbook_section() {
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    let text = std::fs::read_to_string(repo().join("prometheus/rules/rave-alerts.yml")).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    for group in doc["groups"].as_vec().unwrap() {
        let name = group["name"].as_str().unwrap();
        assert!(name.len() <= 40, "group {name}: name longer than 40");
        assert!(
            group["rules"].as_vec().unwrap().len() <= 20,
            "group {name}: more than 20 rules"
        );
    }
    let alerts = alerts();
    assert!(alerts.len() >= 14);
    for alert in alerts {
        let name = alert["alert"].as_str().unwrap();
        let camel = name.starts_with("Rave")
            && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && name.chars().all(|c| c.is_ascii_alphanumeric());
        assert!(
            camel && name.len() <= 40,
            "{name}: CamelCase, prefix Rave, at most 40 characters"
        );
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
        assert!(
            summary.starts_with(|c: char| c.is_ascii_uppercase())
                && summary.ends_with('.')
                && !summary.contains("{{"),
            "{name}: summary must be one static sentence: {summary:?}"
        );
        let description = alert["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            description.contains("{{"),
            "{name}: description must be templated"
        );
        let service = alert["labels"]["service"].as_str().unwrap_or_default();
        assert!(
            SERVICES.contains(&service) || service == "{{ $labels.job }}",
            "{name}: service {service:?} (Alertmanager routes and inhibits on it)"
        );
        // Absolute, from the base ravectl and NixOS replace (runbook.rs).
        let runbook_url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = runbook_url
            .strip_prefix(ravectl::runbook::PLACEHOLDER_BASE)
            .and_then(|rest| rest.strip_prefix('#'))
            .unwrap_or_default();
        assert_eq!(anchor, name.to_ascii_lowercase(), "{name}: runbook_url");
        assert!(
            runbook.contains(&format!("\n## {name}\n")),
            "{name}: no section in docs/runbook.md"
        );
    }
}
