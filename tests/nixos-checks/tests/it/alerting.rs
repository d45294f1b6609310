//! What the P2 host loads for alerting, rendered from the plain-Nix
//! libraries and checked by the programs that read it.

use std::process::Command;

use crate::helpers::{nix_eval, repo, run, tool};

#[test]
fn the_hosts_alert_rules_link_to_absolute_runbooks_and_pass_promtool() {
    let text = std::fs::read_to_string(repo().join("nixos/lib/rules.nix")).unwrap();
    // One placeholder, the one ravectl replaces too.
    assert!(text.contains(&format!(
        "placeholder = \"{}\"",
        ravectl::runbook::PLACEHOLDER_BASE
    )));
    let base = "https://git.example.org/ops/rave/-/blob/main/docs/runbook.md";
    for given in [base.to_owned(), format!("{base}#")] {
        let alerts = nix_eval(&format!(
            "(import ./nixos/lib/rules.nix {{ runbookBaseUrl = \"{given}\"; }}).alerts"
        ));
        let alerts = alerts.as_str().unwrap();
        let links: Vec<_> = alerts
            .lines()
            .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
            .collect();
        assert!(links.len() >= 30, "{} links", links.len());
        for link in links {
            let anchor = link
                .strip_prefix(&format!("{base}#"))
                .unwrap_or_else(|| panic!("{link}"));
            assert!(!anchor.is_empty() && !anchor.contains('#'), "{link}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rave-alerts.yml");
        std::fs::write(&file, alerts).unwrap();
        run(Command::new(tool("promtool", "apt-get install prometheus"))
            .args(["check", "rules"])
            .arg(&file));
    }
}
