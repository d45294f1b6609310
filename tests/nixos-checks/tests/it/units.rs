//! Each RAVE unit, rendered from nixos/lib/unit.nix the way NixOS renders
//! `serviceConfig`, scored by `systemd-analyze security --offline=true`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::{SERVICES, nix_eval, services, services_expr, tool};

/// As nixpkgs' systemd-lib `attrsToSection`: lists become repeated keys,
/// booleans `true`/`false`.
fn render(unit: &str, service_config: &Value) -> String {
    let mut text = format!("[Unit]\nDescription=RAVE {unit}\n\n[Service]\n");
    let value = |v: &Value| match v {
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (key, v) in service_config.as_object().expect("serviceConfig is a set") {
        match v {
            Value::Array(items) => {
                for item in items {
                    writeln!(text, "{key}={}", value(item)).unwrap();
                }
            }
            v => writeln!(text, "{key}={}", value(v)).unwrap(),
        }
    }
    text.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    text
}

/// (exit status success, score) of `systemd-analyze security` on a unit file.
fn score(path: &Path) -> (bool, f64) {
    let out = Command::new(tool("systemd-analyze", "apt-get install systemd"))
        .args(["security", "--offline=true", "--threshold=10", "--no-pager"])
        .arg(path)
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no score in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable score line: {line}"));
    (out.status.success(), score)
}

#[test]
fn every_rave_unit_scores_safe_under_systemd_analyze_security() {
    let defs = services("/run/credentials");
    let dir = tempfile::tempdir().unwrap();
    for name in SERVICES {
        let def = &defs[name];
        let unit = def["unit"].as_str().unwrap();
        let config = nix_eval(&format!(
            "import ./nixos/lib/unit.nix {{ def = ({defs}).{name}; \
             execStart = \"/nix/store/00000000000000000000000000000000-rave/bin/{name} --config /etc/rave/{name}.toml\"; }}",
            defs = services_expr("/run/credentials"),
        ));
        let path = dir.path().join(format!("{unit}.service"));
        std::fs::write(&path, render(unit, &config)).unwrap();
        let (passed, score) = score(&path);
        eprintln!("{unit}: systemd-analyze security --offline=true: {score:.1}");
        assert!(
            passed && score <= 1.0,
            "{unit} scores {score}, above 1.0 (SAFE):\n{}",
            std::fs::read_to_string(&path).unwrap()
        );
        // The units' loopback rule and credentials are really there.
        assert_eq!(config["IPAddressDeny"], "any");
        assert_eq!(config["User"], def["user"]);
        assert_eq!(
            config["Environment"],
            serde_json::json!(["MALLOC_ARENA_MAX=2"])
        );
        assert_eq!(
            config["LoadCredential"].as_array().unwrap().len(),
            def["credentials"].as_object().unwrap().len()
        );
    }
}

#[test]
fn a_replica_s_unit_scores_as_safe_and_may_write_every_spool() {
    let expr = crate::helpers::services_expr_with("/run/credentials", "replicas.ingest = 2;");
    let config = nix_eval(&format!(
        "import ./nixos/lib/unit.nix {{ def = ({expr}).ingest // builtins.elemAt ({expr}).ingest.instances 1; \
         execStart = \"/nix/store/00000000000000000000000000000000-rave/bin/ingest --config /etc/rave/ingest-2.toml\"; }}",
    ));
    assert_eq!(
        config["StateDirectory"],
        serde_json::json!(["rave-ingest/spool-1", "rave-ingest/spool-2"])
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rave-ingest@2.service");
    std::fs::write(&path, render("rave-ingest@2", &config)).unwrap();
    let (passed, score) = score(&path);
    eprintln!("rave-ingest@2: systemd-analyze security --offline=true: {score:.1}");
    assert!(passed && score <= 1.0, "rave-ingest@2 scores {score}");
}

#[test]
fn the_score_is_a_real_measurement_an_unhardened_unit_is_unsafe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bare.service");
    let bare =
        serde_json::json!({ "ExecStart": "/nix/store/x-rave/bin/ingest", "User": "rave_ingest" });
    std::fs::write(&path, render("bare", &bare)).unwrap();
    let (passed, score) = score(&path);
    assert!(!passed && score > 5.0, "an unhardened unit scored {score}");
}

#[test]
fn every_service_may_open_unix_sockets_to_report_ready_and_only_inet_besides() {
    // Type=notify: READY=1 goes to systemd's AF_UNIX notify socket (and
    // PostgreSQL's local socket is AF_UNIX too); nothing else is allowed.
    let defs = services("/run/credentials");
    for name in SERVICES {
        let families = defs[name]["addressFamilies"].as_array().unwrap();
        assert_eq!(
            families,
            &vec![
                serde_json::json!("AF_UNIX"),
                serde_json::json!("AF_INET"),
                serde_json::json!("AF_INET6")
            ],
            "{name}"
        );
    }
}
