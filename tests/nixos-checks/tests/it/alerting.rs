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

#[test]
fn the_hosts_alertmanager_configuration_is_ravectls_and_amtool_accepts_it() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, "").unwrap();
    let token = secrets.join("alertmanager.token");
    let cases = [
        ("{ }", vec![]),
        (
            r#"{ webhookUrl = "https://hooks.example.org/rave"; }"#,
            vec!["--alert-webhook-url", "https://hooks.example.org/rave"],
        ),
        (
            r#"{ email = { to = "ops@example.org"; from = "rave@example.org"; smarthost = "smtp.example.org:587"; username = "rave"; passwordFile = "/run/credentials/alertmanager.service/smtp-password"; }; }"#,
            vec![
                "--alert-email-to",
                "ops@example.org",
                "--smtp-from",
                "rave@example.org",
                "--smtp-smarthost",
                "smtp.example.org:587",
                "--smtp-username",
                "rave",
                "--smtp-password-file",
                "/run/credentials/alertmanager.service/smtp-password",
            ],
        ),
        ("{ asTasks = true; }", vec!["--alerts-as-tasks"]),
    ];
    for (i, (nix_args, flags)) in cases.iter().enumerate() {
        // The host's, with the paths ravectl would use.
        let extra = nix_args.trim_start_matches('{').trim_end_matches('}');
        let nix = nix_eval(&format!(
            "import ./nixos/lib/alertmanager.nix {{ {extra} tokenFile = \"{}\"; caFile = \"{}\"; }}",
            token.display(),
            cert.display()
        ));
        let cli = ravectl::cli::Cli::try_parse_from(["ravectl", "up"].iter().chain(flags)).unwrap();
        let ravectl::cli::Command::Up(args) = cli.command else {
            unreachable!()
        };
        let text =
            ravectl::up::alertmanager_config(&args, "https://localhost:3002", &cert, &secrets)
                .unwrap();
        let local: serde_json::Value =
            serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
        assert_eq!(
            nix, local,
            "{nix_args}: the host and the local stack route differently"
        );
        let file = dir.path().join(format!("alertmanager-{i}.yml"));
        std::fs::write(&file, serde_json::to_string_pretty(&nix).unwrap()).unwrap();
        run(
            Command::new(tool("amtool", "apt-get install prometheus-alertmanager"))
                .arg("check-config")
                .arg(&file),
        );
    }
}

#[test]
fn the_hosts_blackbox_module_passes_the_exporters_own_check() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ravectl::tls::ensure_certificate(dir.path()).unwrap();
    let config = nix_eval(&format!(
        "import ./nixos/lib/blackbox.nix {{ caFile = \"{}\"; }}",
        cert.display()
    ));
    let file = dir.path().join("blackbox.yml");
    std::fs::write(&file, serde_json::to_string(&config).unwrap()).unwrap();
    run(Command::new(tool(
        "prometheus-blackbox-exporter",
        "apt-get install prometheus-blackbox-exporter",
    ))
    .arg("--config.check")
    .arg(format!("--config.file={}", file.display())));
    assert_eq!(
        config["modules"]["rave_https"]["http"]["tls_config"]["ca_file"],
        cert.display().to_string()
    );
}

#[test]
fn a_host_with_a_publicly_signed_certificate_probes_with_the_systems_cas() {
    let config = nix_eval("import ./nixos/lib/blackbox.nix { caFile = null; }");
    let http = &config["modules"]["rave_https"]["http"];
    assert!(http.get("tls_config").is_none(), "{config}");
    assert_eq!(http["fail_if_not_ssl"], true);
}
